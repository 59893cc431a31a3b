package proxmoxve

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A node that is down: nothing listens (connection refused).
func deadAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A node cut from the network: a listener with a backlog of 0 whose one queued connection nobody
// accepts, so the kernel drops every further SYN and a connection never completes (as a firewall
// or a dead link drops it).
func cutAddress(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	filler, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	return addr
}

func node(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name+" "+r.Method+" "+r.URL.Path)
	}))
	t.Cleanup(s.Close)
	return s
}

// client: a bpg-like client for endpoint with the other nodes as candidates; every URL names the endpoint.
func client(t *testing.T, endpoint string, others ...string) *http.Client {
	t.Helper()
	registryMu.Lock()
	registry = map[string]*candidates{}
	registryMu.Unlock()
	c := &http.Client{Transport: &http.Transport{}}
	var addresses []string
	for _, o := range others {
		host, _, _ := net.SplitHostPort(o)
		addresses = append(addresses, host)
	}
	if err := installFailover(c, "http://"+endpoint, addresses); err != nil {
		t.Fatal(err)
	}
	return c
}

func get(t *testing.T, c *http.Client, endpoint string) (string, error) {
	t.Helper()
	resp, err := c.Get("http://" + endpoint + "/api2/json/version")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), nil
}

// Candidates share the endpoint's port: the test nodes are on 127.0.0.x with one port.
func onePort(t *testing.T) (string, func(ip string) string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	return port, func(ip string) string { return net.JoinHostPort(ip, port) }
}

func serveOn(t *testing.T, addr, name string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cannot listen on %s: %v", addr, err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name+" "+r.Method+" "+r.URL.Path)
	}))
	s.Listener.Close()
	s.Listener = l
	s.Start()
	t.Cleanup(s.Close)
}

func TestTheEndpointIsUsedWhileItAnswers(t *testing.T) {
	_, at := onePort(t)
	serveOn(t, at("127.0.0.21"), "node1")
	serveOn(t, at("127.0.0.22"), "node2")
	c := client(t, at("127.0.0.21"), at("127.0.0.22"))
	body, err := get(t, c, at("127.0.0.21"))
	if err != nil || !strings.HasPrefix(body, "node1 GET /api2/json/version") {
		t.Fatalf("want node1's answer, got %q %v", body, err)
	}
}

func TestADeadEndpointFailsOverToTheNextNodeAndIsRemembered(t *testing.T) {
	_, at := onePort(t)
	serveOn(t, at("127.0.0.32"), "node2")
	serveOn(t, at("127.0.0.33"), "node3")
	c := client(t, at("127.0.0.31"), at("127.0.0.32"), at("127.0.0.33"))
	for i := 0; i < 3; i++ {
		body, err := get(t, c, at("127.0.0.31"))
		if err != nil || !strings.HasPrefix(body, "node2 ") {
			t.Fatalf("call %d: want node2's answer, got %q %v", i, body, err)
		}
	}
	f := c.Transport.(*failover)
	if f.c.order()[0] != at("127.0.0.32") {
		t.Fatalf("want node2 remembered first, got %v", f.c.order())
	}
}

func TestACutEndpointCostsAtMostTheConnectBound(t *testing.T) {
	ConnectBound = 500 * time.Millisecond
	defer func() { ConnectBound = 2 * time.Second }()
	cut := cutAddress(t)
	_, port, _ := net.SplitHostPort(cut)
	live := net.JoinHostPort("127.0.0.42", port)
	serveOn(t, live, "node2")
	c := client(t, cut, live)
	start := time.Now()
	body, err := get(t, c, cut)
	took := time.Since(start)
	if err != nil || !strings.HasPrefix(body, "node2 ") {
		t.Fatalf("want node2's answer, got %q %v", body, err)
	}
	if took > ConnectBound+time.Second {
		t.Fatalf("the cut endpoint cost %s, more than the bound %s", took, ConnectBound)
	}
	start = time.Now()
	if _, err := get(t, c, cut); err != nil || time.Since(start) > 200*time.Millisecond {
		t.Fatalf("the second call should go to the remembered node at once: %v in %s", err, time.Since(start))
	}
}

func TestEveryNodeDownNamesEachAndTheFix(t *testing.T) {
	dead := deadAddress(t)
	_, port, _ := net.SplitHostPort(dead)
	c := client(t, dead, net.JoinHostPort("127.0.0.52", port))
	_, err := get(t, c, dead)
	if !errors.Is(err, ErrNoNodeAnswers) {
		t.Fatalf("want ErrNoNodeAnswers, got %v", err)
	}
	for _, want := range []string{dead, "127.0.0.52:" + port, "refused", "proxmox.nodes[].address"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("%v: want %q in it", err, want)
		}
	}
}

func TestAPostIsSentAgainOnlyIfItWasNeverSent(t *testing.T) {
	_, at := onePort(t)
	serveOn(t, at("127.0.0.62"), "node2")
	c := client(t, at("127.0.0.61"), at("127.0.0.62"))
	resp, err := c.Post("http://"+at("127.0.0.61")+"/api2/json/nodes/pve-node2/qemu", "application/x-www-form-urlencoded", strings.NewReader("vmid=101"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(string(b), "node2 POST ") {
		t.Fatalf("want the POST on node2, got %q", b)
	}
}

func TestOtherHostsAreLeftAlone(t *testing.T) {
	s := node(t, "elsewhere")
	c := client(t, deadAddress(t))
	resp, err := c.Get(s.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
