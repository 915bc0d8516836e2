package localcluster

import (
	"fmt"
	"sync"
	"time"
)

// Supervised keeps one process running the way a kubelet keeps a container
// with restartPolicy Always: when it exits without being asked to, it is
// run again (Rerun) after a short back-off. A controller that loses its
// leader lease while the API server is down exits by design; in a cluster
// it would be restarted, and so it is here.
//
// Kill and Stop take it down on purpose: it stays down until Start.
type Supervised struct {
	c *Cluster

	mu       sync.Mutex
	proc     *Process
	down     bool // taken down on purpose
	restarts int
}

// Supervise starts watching p, a process of this cluster.
func (c *Cluster) Supervise(p *Process) *Supervised {
	s := &Supervised{c: c, proc: p}
	go s.watch(p)
	return s
}

// Process is the current process.
func (s *Supervised) Process() *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// Restarts is how many times the process was restarted after it exited on
// its own.
func (s *Supervised) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// Kill ends the process with SIGKILL and keeps it down until Start.
func (s *Supervised) Kill() error {
	p := s.takeDown()
	return p.Kill()
}

// Stop ends the process with SIGTERM (SIGKILL after 10 s) and keeps it down
// until Start.
func (s *Supervised) Stop() error {
	p := s.takeDown()
	return p.Stop()
}

// Pause hangs the process (SIGSTOP); it is not restarted meanwhile, since it
// has not exited.
func (s *Supervised) Pause() error { return s.Process().Pause() }

// Resume continues a paused process.
func (s *Supervised) Resume() error { return s.Process().Resume() }

func (s *Supervised) takeDown() *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = true
	return s.proc
}

// Start runs the process again after Kill or Stop.
func (s *Supervised) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down {
		return fmt.Errorf("%s is not down", s.proc.Name)
	}
	<-s.proc.Done()
	p, err := s.c.Rerun(s.proc)
	if err != nil {
		return err
	}
	s.proc, s.down = p, false
	go s.watch(p)
	return nil
}

// watch restarts p when it exits while not taken down, until the cluster
// no longer holds it (Rerun refuses then).
func (s *Supervised) watch(p *Process) {
	backoff := time.Second
	for {
		<-p.Done()
		s.mu.Lock()
		if s.down || s.proc != p {
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		time.Sleep(backoff)
		s.mu.Lock()
		if s.down || s.proc != p {
			s.mu.Unlock()
			return
		}
		next, err := s.c.Rerun(p)
		if err != nil {
			s.mu.Unlock()
			return
		}
		s.proc = next
		s.restarts++
		s.mu.Unlock()
		fmt.Fprintf(s.c.log(), "[localcluster] %s exited on its own; restarted it (pid %d)\n", p.Name, next.PID())
		p = next
		backoff = min(2*backoff, 10*time.Second)
	}
}
