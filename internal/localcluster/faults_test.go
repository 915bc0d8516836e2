package localcluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// echoServer answers each line with "<name>: <line>".
func echoServer(t *testing.T, name string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s: %s", name, line)
				}
			}()
		}
	}()
	return ln
}

func ask(t *testing.T, addr string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestTCPProxy(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	defer a.Close()
	p, err := StartTCPProxy(a.Addr().String(), b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	got := map[string]int{}
	for range 4 {
		line, err := ask(t, p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		got[line]++
	}
	if got["a: hello"] != 2 || got["b: hello"] != 2 {
		t.Errorf("answers %v: want the two backends in turn", got)
	}

	// One backend gone: every connection goes to the other.
	b.Close()
	for range 3 {
		if line, err := ask(t, p.Addr()); err != nil || line != "a: hello" {
			t.Errorf("with b down: %q, %v; want a to answer", line, err)
		}
	}
	if s := p.Served(); s[a.Addr().String()] != 5 || s[b.Addr().String()] != 2 {
		t.Errorf("served %v", s)
	}

	// None left: the connection is closed without an answer.
	a.Close()
	if line, err := ask(t, p.Addr()); err == nil {
		t.Errorf("with no backend: answered %q", line)
	}
	if p.Refused() != 1 {
		t.Errorf("refused = %d, want 1", p.Refused())
	}
}

func TestDelayProxy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer srv.Close()
	d, err := StartDelayProxy(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	get := func(timeout time.Duration) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.URL+"/api/v1/query", nil)
		if err != nil {
			return "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if body, err := get(2 * time.Second); err != nil || body != "ok" {
		t.Fatalf("no delay: %q, %v", body, err)
	}
	d.SetDelay(time.Minute)
	if _, err := get(300 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("delay longer than the client's timeout: %v, want the deadline exceeded", err)
	}
	d.SetDelay(0)
	if body, err := get(2 * time.Second); err != nil || body != "ok" {
		t.Errorf("delay lifted: %q, %v", body, err)
	}
}

// TestProcessFaults pauses, kills, reruns and supervises a real process
// (sleep) under a Cluster that holds only it.
func TestProcessFaults(t *testing.T) {
	c := &Cluster{dir: t.TempDir()}
	defer func() { _ = c.Stop() }()
	p, err := c.StartProcess("sleeper", "/bin/sh", []string{"-c", "echo started; exec sleep 300"}, []string{"SLEEPER=1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if c.Component("sleeper") != p {
		t.Fatal("Component does not find the process")
	}
	if _, err := c.Rerun(p); err == nil {
		t.Error("Rerun of a running process succeeded")
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if exited, _ := p.Exited(); !exited {
		t.Fatal("not exited after Kill")
	}
	q, err := c.Rerun(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Component("sleeper") != q || q.PID() == p.PID() {
		t.Fatal("the rerun process did not take the old one's place")
	}
	if _, err := c.Rerun(p); err == nil {
		t.Error("the old process was rerun twice")
	}

	// Supervised: an exit on its own is restarted, a Kill is not.
	s := c.Supervise(q)
	if err := q.signal(9); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Restarts() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if s.Restarts() != 1 || s.Process() == q {
		t.Fatalf("after an exit on its own: %d restarts", s.Restarts())
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // longer than the first back-off
	if exited, _ := s.Process().Exited(); !exited || s.Restarts() != 1 {
		t.Fatalf("a process killed on purpose was restarted (%d restarts)", s.Restarts())
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if exited, _ := s.Process().Exited(); exited {
		t.Fatal("not running after Start")
	}
}

func TestScrapeFilter(t *testing.T) {
	page := "# HELP m a metric\n# TYPE m gauge\nm{Hostname=\"a\",pod=\"p\"} 1\nm{Hostname=\"b\",pod=\"q\"} 2\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, page) }))
	defer srv.Close()
	f, err := StartScrapeFilter(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	get := func() string {
		resp, err := http.Get("http://" + f.Addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := get(); got != page {
		t.Errorf("unfiltered: %q", got)
	}
	f.Drop(`Hostname="b"`)
	if got, want := get(), "# HELP m a metric\n# TYPE m gauge\nm{Hostname=\"a\",pod=\"p\"} 1\n"; got != want {
		t.Errorf("dropping b: %q, want %q", got, want)
	}
	f.Drop()
	if got := get(); got != page {
		t.Errorf("restored: %q", got)
	}
}
