package main

import (
	"bytes"
	"io"
	"sync"
)

// quietShutdown runs the SDK's exec script (argv[1]) as its own __main__, with one change: when
// the engine ends a deployment because a resource failed, it reports that failure, shuts down its
// resource monitor, and the program's pending calls raise "Resource monitor has terminated,
// shutting down", which the exec script logs as a second error. Upstream's host shows the
// provider's error and "update failed" alone; so does this one.
const quietShutdown = `import runpy, sys
import pulumi.log
_error = pulumi.log.error
def _error_unless_shutdown(msg, *args, **kwargs):
    if str(msg) != "Resource monitor has terminated, shutting down":
        _error(msg, *args, **kwargs)
pulumi.log.error = _error_unless_shutdown
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
`

// monitorGone are the marks of a Python program that outlived its deployment: the engine has
// shut down its resource monitor (after reporting the failure that ended the deployment), and
// the SDK's pending calls fail with UNAVAILABLE.
var monitorGone = [][]byte{
	[]byte("Resource monitor has terminated"),
	[]byte("StatusCode.UNAVAILABLE"),
	[]byte("KeyboardInterrupt"),
}

// shutdownFilter passes the program's output through line by line, except Python tracebacks:
// from the first "Traceback (most recent call last):" on, the rest of the stream is held until
// the program exits. If what was held shows the monitor gone, it is the SDK failing to talk to
// an engine that has already said what went wrong, and it is dropped, as upstream's host shows
// the provider's error and "update failed" alone. Any other traceback is passed on unchanged.
type shutdownFilter struct {
	mu      sync.Mutex
	out     io.Writer
	partial []byte
	held    bytes.Buffer
	holding bool
}

func newShutdownFilter(out io.Writer) *shutdownFilter { return &shutdownFilter{out: out} }

var tracebackStart = []byte("Traceback (most recent call last):")

func (f *shutdownFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.partial = append(f.partial, p...)
	for {
		i := bytes.IndexByte(f.partial, '\n')
		if i < 0 {
			break
		}
		line := f.partial[:i+1]
		if !f.holding && bytes.HasPrefix(line, tracebackStart) {
			f.holding = true
		}
		if f.holding {
			f.held.Write(line)
		} else if _, err := f.out.Write(line); err != nil {
			return 0, err
		}
		f.partial = f.partial[i+1:]
	}
	return len(p), nil
}

// finish writes what was held back, unless it is only the noise of a program outliving its monitor.
func (f *shutdownFilter) finish() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held.Write(f.partial)
	f.partial = nil
	held := f.held.Bytes()
	for _, mark := range monitorGone {
		if bytes.Contains(held, mark) {
			held = nil
			break
		}
	}
	_, _ = f.out.Write(held)
	f.held.Reset()
}
