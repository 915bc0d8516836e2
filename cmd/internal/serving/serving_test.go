package serving

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListenAllOrNone: a taken port fails the start with the server's
// name, and the servers bound before it are released.
func TestListenAllOrNone(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	first := &Server{Name: "first server", Addr: "127.0.0.1:0", Handler: http.NotFoundHandler()}
	_, err = Listen(first, &Server{Name: "second server", Addr: taken.Addr().String(), Handler: http.NotFoundHandler()})
	if err == nil || !strings.HasPrefix(err.Error(), "second server: ") {
		t.Fatalf("Listen on a taken port = %v, want an error naming the second server", err)
	}
	// The first server's port is free again.
	ln, err := net.Listen("tcp", first.BoundAddr())
	if err != nil {
		t.Fatalf("the first server's port was not released: %v", err)
	}
	ln.Close()
}

func TestServeAndShutdown(t *testing.T) {
	s := &Server{Name: "hello server", Addr: "127.0.0.1:0", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "hello")
	})}
	g, err := Listen(s)
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	resp, err := http.Get("http://" + s.BoundAddr())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello" {
		t.Errorf("body = %q", body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // shutdown still gets its own time
	if err := g.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case err := <-g.Failed():
		t.Errorf("a closed server reported %v", err)
	default:
	}
	if resp, err := http.Get("http://" + s.BoundAddr()); err == nil {
		resp.Body.Close()
		t.Error("still serving after Shutdown")
	}
}

func TestRestConfig(t *testing.T) {
	_, err := RestConfig("spillway-test", filepath.Join(t.TempDir(), "missing"))
	if err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("RestConfig with a missing file = %v, want an error pointing at --kubeconfig", err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	const doc = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(kc, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := RestConfig("spillway-test", kc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:6443" || !strings.HasPrefix(cfg.UserAgent, "spillway-test/") {
		t.Errorf("host %q, user agent %q", cfg.Host, cfg.UserAgent)
	}
}
