package placementwebhook

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

// ClientAuth makes the webhook's TLS listener accept only clients that
// present a certificate signed by a CA of its bundle and, when names are
// given, whose common name or a DNS name is one of them. Configured with
// the client certificate kube-apiserver presents to webhooks (its
// AdmissionConfiguration's WebhookAdmission kubeConfigFile), it refuses
// admission reviews from anyone but the API server: a pod that can reach the
// webhook port can no longer post reviews that take room on nodes.
//
// The CA file is re-read when its size or modification time changes
// (checked at most once per recheck), so a rotated bundle needs no
// restart; an unreadable new version keeps the bundle loaded before.
type ClientAuth struct {
	path    string
	names   []string
	recheck time.Duration
	now     func() time.Time

	mu      sync.Mutex
	pool    *x509.CertPool
	stamp   string
	checked time.Time
	loadErr error
}

// NewClientAuth loads the CA bundle at path; names may be empty (any
// certificate the CA signed for client authentication).
func NewClientAuth(path string, names []string, recheck time.Duration, now func() time.Time) (*ClientAuth, error) {
	a := &ClientAuth{path: path, names: slices.Clone(names), recheck: recheck, now: now}
	if _, err := a.current(); err != nil {
		return nil, err
	}
	return a, nil
}

// Configure is a webhook.Options.TLSOpts function: a certificate the
// client sends must pass verifyPeer, or the handshake fails. Sending none is
// left to Require to refuse, so that connections that ask for nothing
// (controller-runtime's readiness check dials the port) complete quietly
// instead of logging a handshake error every few seconds. Use both.
func (a *ClientAuth) Configure(c *tls.Config) {
	c.ClientAuth = tls.RequestClientCert
	c.VerifyPeerCertificate = a.verifyPeer
}

// Require refuses, with 403 Forbidden, every request over a connection
// whose client sent no certificate; one that sent a certificate passed
// verifyPeer during the handshake.
func (a *ClientAuth) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "a client certificate is required", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// current returns the bundle, reloading it when the file changed.
func (a *ClientAuth) current() (*x509.CertPool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.now()
	if a.pool != nil && t.Sub(a.checked) < a.recheck {
		return a.pool, nil
	}
	a.checked = t
	fi, err := os.Stat(a.path)
	if err == nil {
		stamp := fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
		if a.pool != nil && stamp == a.stamp {
			return a.pool, nil
		}
		var b []byte
		if b, err = os.ReadFile(a.path); err == nil {
			pool := x509.NewCertPool()
			if pool.AppendCertsFromPEM(b) {
				a.pool, a.stamp, a.loadErr = pool, stamp, nil
				return pool, nil
			}
			err = errors.New("no PEM certificate in it")
		}
	}
	a.loadErr = fmt.Errorf("webhook client CA file %s: %w", a.path, err)
	if a.pool != nil {
		return a.pool, nil
	}
	return nil, a.loadErr
}

// verifyPeer is tls.Config.VerifyPeerCertificate under RequestClientCert:
// a certificate sent must chain to the bundle, be valid now for client
// authentication, and carry an allowed name. No certificate passes here and
// is refused by Require.
func (a *ClientAuth) verifyPeer(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) == 0 {
		return nil
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("parsing the client certificate: %w", err)
		}
		certs[i] = c
	}
	pool, err := a.current()
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: pool, Intermediates: inter, CurrentTime: a.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return fmt.Errorf("client certificate %q: %w", leaf.Subject.CommonName, err)
	}
	if len(a.names) == 0 || slices.Contains(a.names, leaf.Subject.CommonName) ||
		slices.ContainsFunc(leaf.DNSNames, func(n string) bool { return slices.Contains(a.names, n) }) {
		return nil
	}
	return fmt.Errorf("client certificate %q is not one of the allowed webhook clients %v", leaf.Subject.CommonName, a.names)
}
