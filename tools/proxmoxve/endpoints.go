package proxmoxve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// The Proxmox VE API through any live node of the cluster.
//
// bpg's provider talks to one address, the configured endpoint (bpg #692, Telmate #851: a dead
// endpoint node fails every command, and the field's only answer is a load balancer). Every PVE
// node serves the whole cluster's API (pveproxy forwards a node's calls to it), so the plugin
// tries the configured endpoint first and the cluster's other nodes after it. The nodes are the
// provider's own `ssh.node` entries (name, address): the provider schema stays that of the
// pulumi-proxmoxve 8.3.0 SDK, the list is recorded with the provider's configuration in the
// state (a refresh, which runs with the recorded configuration, already has it), and the
// official plugin reads the same entries as the nodes' SSH addresses, which they are.
//
// A candidate that does not connect within ConnectBound is skipped, and the live one is
// remembered for the rest of the run (one plugin process), so a dead endpoint costs one bound
// per run, not one per call. A request that was never sent (no connection) goes to the next
// candidate whatever its method; a GET or HEAD whose connection broke, or that had no answer
// within AnswerBound, goes there too; any other request that was sent keeps its error: PVE may
// have acted on it.

// ConnectBound bounds a connection (TCP and TLS) to one candidate.
var ConnectBound = 2 * time.Second

// AnswerBound bounds the wait for the answer to a GET or HEAD on a live connection (a node cut
// from the network in the middle of a call never answers). PVE answers its reads in far less.
var AnswerBound = 60 * time.Second

// candidates: the endpoint's scheme and port; the hosts in the order they are tried.
type candidates struct {
	mu    sync.Mutex
	hosts []string // host:port, the configured endpoint first
	live  string   // the host that answered last ("" before the first answer)
}

var (
	registryMu sync.Mutex
	registry   = map[string]*candidates{}
)

// candidatesFor is shared by the plugin's two halves (SDKv2 and plugin framework): one
// remembered live node per set of candidates in the process.
func candidatesFor(endpoint string, nodeAddresses []string) (*candidates, string, error) {
	u, err := url.Parse(strings.TrimSpace(endpoint))
	if err != nil || u.Host == "" {
		return nil, "", fmt.Errorf("endpoint %q is not a URL", endpoint)
	}
	port := u.Port()
	if port == "" {
		port = "8006"
	}
	hosts := []string{u.Host}
	for _, address := range nodeAddresses {
		address = strings.Trim(strings.TrimSpace(address), "[]")
		if address == "" {
			continue
		}
		host := net.JoinHostPort(address, port)
		if !slices.Contains(hosts, host) {
			hosts = append(hosts, host)
		}
	}
	key := strings.Join(hosts, ",")
	registryMu.Lock()
	defer registryMu.Unlock()
	c, ok := registry[key]
	if !ok {
		c = &candidates{hosts: hosts}
		registry[key] = c
	}
	return c, u.Host, nil
}

// order: the remembered live host first, then the others as configured.
func (c *candidates) order() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.hosts))
	if c.live != "" {
		out = append(out, c.live)
	}
	for _, h := range c.hosts {
		if h != c.live {
			out = append(out, h)
		}
	}
	return out
}

func (c *candidates) remember(host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live != host {
		if c.live != "" || host != c.hosts[0] {
			fmt.Fprintf(os.Stderr, "proxmoxve: the Proxmox VE API answers at %s (configured endpoint %s)\n", host, c.hosts[0])
		}
		c.live = host
	}
}

// failover is the RoundTripper that sends a call for the endpoint to a live candidate.
type failover struct {
	inner    http.RoundTripper
	c        *candidates
	endpoint string // host:port of the configured endpoint, as bpg writes it in every URL
}

// ErrNoNodeAnswers is the error when no candidate answered.
var ErrNoNodeAnswers = errors.New("no node of the Proxmox VE cluster answers")

func (f *failover) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != f.endpoint {
		return f.inner.RoundTrip(req)
	}
	readOnly := req.Method == http.MethodGet || req.Method == http.MethodHead
	var reasons []string
	for i, host := range f.c.order() {
		attempt, err := onHost(req, host, i > 0)
		if err != nil {
			return nil, err
		}
		resp, sent, err := f.try(attempt, readOnly)
		if err == nil {
			f.c.remember(host)
			return resp, nil
		}
		if req.Context().Err() != nil || (sent && !readOnly) {
			return nil, err
		}
		reasons = append(reasons, fmt.Sprintf("%s (%s)", host, short(err)))
	}
	return nil, fmt.Errorf("%w: tried %s; check that proxmox.endpoint and proxmox.nodes[].address name the cluster's nodes and that one of them is up", ErrNoNodeAnswers, strings.Join(reasons, ", "))
}

// onHost: the request sent to host (the URL's host changed, so TLS checks that node's certificate).
func onHost(req *http.Request, host string, again bool) (*http.Request, error) {
	out := req.Clone(req.Context())
	out.URL.Host = host
	out.Host = ""
	if again && req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return nil, fmt.Errorf("%w: and the request's body cannot be sent again", ErrNoNodeAnswers)
		}
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		out.Body = body
	}
	return out, nil
}

// try sends the request with the connection bounded by ConnectBound (and, for a read, the answer
// by AnswerBound); sent says whether a connection was had (the request may have been written).
func (f *failover) try(req *http.Request, readOnly bool) (*http.Response, bool, error) {
	ctx, cancel := context.WithCancel(req.Context())
	var mu sync.Mutex
	connected, answered, expired := false, false, ""
	stop := func(why string) {
		mu.Lock()
		defer mu.Unlock()
		if !answered && expired == "" {
			expired = why
			cancel()
		}
	}
	connectTimer := time.AfterFunc(ConnectBound, func() {
		mu.Lock()
		c := connected
		mu.Unlock()
		if !c {
			stop(fmt.Sprintf("no connection within %s", ConnectBound))
		}
	})
	var answerTimer *time.Timer
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		mu.Lock()
		defer mu.Unlock()
		connected = true
		if readOnly && AnswerBound > 0 {
			answerTimer = time.AfterFunc(AnswerBound, func() { stop(fmt.Sprintf("no answer within %s", AnswerBound)) })
		}
	}}
	resp, err := f.inner.RoundTrip(req.WithContext(httptrace.WithClientTrace(ctx, trace)))
	connectTimer.Stop()
	mu.Lock()
	answered = err == nil
	sent, why := connected, expired
	if answerTimer != nil {
		answerTimer.Stop()
	}
	mu.Unlock()
	if err != nil {
		cancel()
		if why != "" {
			err = fmt.Errorf("%s: %w", why, err)
		}
		return nil, sent, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, sent, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// short: the reason without the URL (it names the host already).
func short(err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Op + ": " + op.Err.Error()
	}
	return err.Error()
}

// installFailover puts the failover in front of a bpg API client's HTTP transport (bpg's
// api.Client.HTTP() is the client its every call goes through).
func installFailover(client *http.Client, endpoint string, nodeAddresses []string) error {
	if client == nil {
		return nil
	}
	if _, done := client.Transport.(*failover); done {
		return nil
	}
	c, host, err := candidatesFor(endpoint, nodeAddresses)
	if err != nil {
		return err
	}
	inner := client.Transport
	if inner == nil {
		inner = http.DefaultTransport
	}
	client.Transport = &failover{inner: inner, c: c, endpoint: host}
	return nil
}
