package promquery

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-dev/spillway/pkg/metricnames"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial atomic.Int64

func newTestCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate for cn (a server one for 127.0.0.1 when
// server is set) as PEM, with its key.
func (ca *testCA) issue(t testing.TB, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// securedProm is a Prometheus query endpoint that, like one behind a
// gateway, requires a client certificate signed by clientCA, a bearer
// token and a tenant header, and records what each request presented.
type securedProm struct {
	srv *httptest.Server

	mu      sync.Mutex
	token   string // the token it accepts
	serving tls.Certificate
	seen    []seenRequest
}

type seenRequest struct {
	clientCN, auth, tenant, secret, partialResponse string
}

func startSecuredProm(t *testing.T, serverCA, clientCA *testCA, token string) *securedProm {
	t.Helper()
	p := &securedProm{token: token}
	p.setServing(t, serverCA)
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s := seenRequest{
			auth: r.Header.Get("Authorization"), tenant: r.Header.Get("X-Scope-OrgID"), secret: r.Header.Get("X-Api-Key"),
			partialResponse: r.Form.Get(PartialResponseParam),
		}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			s.clientCN = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		p.mu.Lock()
		p.seen = append(p.seen, s)
		want := "Bearer " + p.token
		p.mu.Unlock()
		if s.auth != want {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(vectorBody))
	}))
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	config := func() *tls.Config {
		p.mu.Lock()
		defer p.mu.Unlock()
		return &tls.Config{
			MinVersion:   tls.VersionTLS12,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			Certificates: []tls.Certificate{p.serving},
		}
	}
	// Each connection gets the certificate set last (a client connecting
	// by IP sends no server name, so GetCertificate would not be asked).
	p.srv.TLS = config()
	p.srv.TLS.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return config(), nil }
	// Refused handshakes are expected here; keep them out of the test log.
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	return p
}

// setServing makes new connections get a certificate from ca.
func (p *securedProm) setServing(t *testing.T, ca *testCA) {
	t.Helper()
	cert, key := ca.issue(t, "prometheus", true)
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.serving = pair
	p.mu.Unlock()
}

func (p *securedProm) setToken(token string) {
	p.mu.Lock()
	p.token = token
	p.mu.Unlock()
}

func (p *securedProm) requests() []seenRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]seenRequest(nil), p.seen...)
}

// securedClient writes the credential files into dir and returns a Client
// over NewTransport.
func securedClient(t *testing.T, url string, cfg TransportConfig) *Client {
	t.Helper()
	rt, err := NewTransport(cfg)
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	c, err := New(Config{URL: url, Timeout: 5 * time.Second, RoundTripper: rt, SeriesSelector: testSelector})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var smQuery = Query{Metrics: []string{metricnames.ProcessSMUtil}}

// TestTransportRotatesCredentials runs real queries over mutual TLS with a
// bearer token and headers, and rotates every file in place the way a
// Secret volume does: each new version is used from the next request, with
// no new Client.
func TestTransportRotatesCredentials(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server-ca"), newTestCA(t, "client-ca")
	prom := startSecuredProm(t, serverCA, clientCA, "token-1")
	dir := t.TempDir()
	files := map[string]string{}
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key", "token", "api-key"} {
		files[f] = filepath.Join(dir, f)
	}
	writeFile(t, files["ca.crt"], serverCA.pem)
	cert, key := clientCA.issue(t, "adapter-1", false)
	writeFile(t, files["tls.crt"], cert)
	writeFile(t, files["tls.key"], key)
	writeFile(t, files["token"], []byte("token-1\n"))
	writeFile(t, files["api-key"], []byte("key-1\n"))
	c := securedClient(t, prom.srv.URL, TransportConfig{
		BearerTokenFile: files["token"], CAFile: files["ca.crt"], CertFile: files["tls.crt"], KeyFile: files["tls.key"],
		Headers: []Header{{Name: "X-Scope-OrgID", Value: "tenant-a"}, {Name: "X-Api-Key", File: files["api-key"]}},
	})
	query := func() error {
		_, err := c.Samples(context.Background(), smQuery)
		return err
	}
	last := func() seenRequest {
		r := prom.requests()
		if len(r) == 0 {
			t.Fatal("no request reached the server")
		}
		return r[len(r)-1]
	}

	if err := query(); err != nil {
		t.Fatalf("first query: %v", err)
	}
	if got, want := last(), (seenRequest{clientCN: "adapter-1", auth: "Bearer token-1", tenant: "tenant-a", secret: "key-1", partialResponse: "false"}); got != want {
		t.Fatalf("server saw %+v, want %+v", got, want)
	}

	// The token rotates: the server accepts only the new one.
	prom.setToken("token-2")
	if err := query(); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("query with the old token: %v, want a 401", err)
	}
	writeFile(t, files["token"], []byte("token-2"))
	writeFile(t, files["api-key"], []byte("key-2"))
	if err := query(); err != nil {
		t.Fatalf("query after the token rotated: %v", err)
	}
	if got := last(); got.auth != "Bearer token-2" || got.secret != "key-2" {
		t.Errorf("after rotation the server saw %+v, want token-2 and key-2", got)
	}

	// The client certificate rotates: the next request presents the new one.
	cert, key = clientCA.issue(t, "adapter-2", false)
	writeFile(t, files["tls.crt"], cert)
	writeFile(t, files["tls.key"], key)
	if err := query(); err != nil {
		t.Fatalf("query after the client certificate rotated: %v", err)
	}
	if got := last().clientCN; got != "adapter-2" {
		t.Errorf("after rotation the server saw client %q, want adapter-2", got)
	}

	// The server moves to a new CA: refused until the CA file has it.
	newServerCA := newTestCA(t, "server-ca-2")
	prom.setServing(t, newServerCA)
	prom.srv.CloseClientConnections()
	if err := query(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("query to a server of an unknown CA: %v, want a verification error", err)
	}
	writeFile(t, files["ca.crt"], append(append([]byte{}, serverCA.pem...), newServerCA.pem...))
	if err := query(); err != nil {
		t.Fatalf("query after the CA file gained the new CA: %v", err)
	}
}

func TestTransportWithoutClientCertIsRefusedByTheServer(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server-ca"), newTestCA(t, "client-ca")
	prom := startSecuredProm(t, serverCA, clientCA, "t")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ca.crt"), serverCA.pem)
	writeFile(t, filepath.Join(dir, "token"), []byte("t"))
	c := securedClient(t, prom.srv.URL, TransportConfig{CAFile: filepath.Join(dir, "ca.crt"), BearerTokenFile: filepath.Join(dir, "token")})
	if _, err := c.Samples(context.Background(), smQuery); err == nil {
		t.Fatal("a server requiring a client certificate answered a client without one")
	}
	if n := len(prom.requests()); n != 0 {
		t.Errorf("%d requests reached the handler", n)
	}
}

// A credential that cannot be read at request time fails the query with a
// *CredentialsError naming the file, and nothing is sent.
func TestTransportCredentialErrorsAtRequestTime(t *testing.T) {
	api := &promAPI{status: http.StatusOK, body: vectorBody}
	srv := httptest.NewServer(api)
	defer srv.Close()
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	orgFile := filepath.Join(dir, "org")
	writeFile(t, token, []byte("s3cret-token"))
	writeFile(t, orgFile, []byte("tenant"))
	c := securedClient(t, srv.URL, TransportConfig{BearerTokenFile: token, Headers: []Header{{Name: "X-Scope-OrgID", File: orgFile}}})
	if _, err := c.Samples(context.Background(), smQuery); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		setup func()
		want  string
	}{
		{"token file removed", func() { _ = os.Remove(token) }, "bearer token file " + token + ": open"},
		{"token with a line break inside", func() { writeFile(t, token, []byte("s3cret\ntoken")) }, "the token has characters not allowed in an HTTP header"},
		{"empty token", func() { writeFile(t, token, []byte(" \n")) }, "bearer token file " + token + ": it is empty"},
		{"header file removed", func() { writeFile(t, token, []byte("ok")); _ = os.Remove(orgFile) }, `header "X-Scope-OrgID" file ` + orgFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(api.forms)
			tt.setup()
			_, err := c.Samples(context.Background(), smQuery)
			var creds *CredentialsError
			if !errors.As(err, &creds) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want a *CredentialsError containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error quotes the token: %v", err)
			}
			if len(api.forms) != before {
				t.Error("a request was sent without its credentials")
			}
		})
	}
}

func TestTransportConfigValidate(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	cert, key := ca.issue(t, "client", false)
	otherCert, _ := ca.issue(t, "other", false)
	path := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, data)
		return p
	}
	caFile, certFile, keyFile := path("ca.crt", ca.pem), path("tls.crt", cert), path("tls.key", key)
	otherCertFile := path("other.crt", otherCert)
	token, emptyToken := path("token", []byte("abc\n")), path("empty", nil)
	notPEM := path("not-pem", []byte("hello"))
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name string
		cfg  TransportConfig
		want []string // empty: valid
	}{
		{name: "nothing", cfg: TransportConfig{}},
		{name: "everything", cfg: TransportConfig{
			BearerTokenFile: token, CAFile: caFile, CertFile: certFile, KeyFile: keyFile,
			Headers: []Header{{Name: "X-Scope-OrgID", Value: "a|b"}, {Name: "X-Api-Key", File: token}},
		}},
		{name: "Authorization from a file without a token file", cfg: TransportConfig{Headers: []Header{{Name: "Authorization", File: token}}}},
		{name: "bad header names, client-owned and repeated headers", cfg: TransportConfig{
			BearerTokenFile: token,
			Headers: []Header{
				{Name: "X Scope", Value: "a"}, {Name: "", Value: "a"}, {Name: "connection", Value: "close"}, {Name: "Host", Value: "h"},
				{Name: "Content-Type", Value: "x"}, {Name: "Accept-Encoding", Value: "gzip"}, {Name: "authorization", Value: "Basic x"},
				{Name: "X-Scope-OrgID", Value: "a"}, {Name: "x-scope-orgid", Value: "b"},
			},
		}, want: []string{
			`header name "X Scope" is not a valid HTTP header name`, `header name "" is not a valid HTTP header name`,
			`header "connection" is set by the HTTP client itself`, `header "Host" is set by the HTTP client itself`,
			`header "Content-Type" is set by the HTTP client itself`, `header "Accept-Encoding" is set by the HTTP client itself`,
			`header "authorization" conflicts with the bearer token file`, `header "x-scope-orgid" is given twice`,
		}},
		{name: "bad header values", cfg: TransportConfig{Headers: []Header{
			{Name: "X-A", Value: "a\r\nX-Injected: 1"}, {Name: "X-B"}, {Name: "X-C", Value: "c", File: token}, {Name: "X-D", File: missing}, {Name: "X-E", File: emptyToken},
		}}, want: []string{
			`header "X-A": the value has characters not allowed`, `header "X-B" has an empty value`, `header "X-C" has both a value and a file`,
			`header "X-D" file ` + missing + `: open`, `header "X-E" file ` + emptyToken + `: it is empty`,
		}},
		{name: "token files", cfg: TransportConfig{BearerTokenFile: missing}, want: []string{"bearer token file " + missing + ": open"}},
		{name: "empty token", cfg: TransportConfig{BearerTokenFile: emptyToken}, want: []string{"bearer token file " + emptyToken + ": it is empty"}},
		{name: "CA file that is no PEM", cfg: TransportConfig{CAFile: notPEM}, want: []string{"CA file " + notPEM + ": no PEM certificate in it"}},
		{name: "CA file missing", cfg: TransportConfig{CAFile: missing}, want: []string{"CA file " + missing + ": open"}},
		{name: "key without certificate", cfg: TransportConfig{KeyFile: keyFile}, want: []string{"a client key needs its client certificate"}},
		{name: "certificate without key", cfg: TransportConfig{CertFile: certFile}, want: []string{"a client certificate needs its key"}},
		{name: "certificate and key that do not match", cfg: TransportConfig{CertFile: otherCertFile, KeyFile: keyFile}, want: []string{
			"client certificate " + otherCertFile + " (key " + keyFile + "): tls: private key does not match public key",
		}},
		{name: "certificate missing", cfg: TransportConfig{CertFile: missing, KeyFile: keyFile}, want: []string{"client certificate " + missing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if _, nerr := NewTransport(tt.cfg); (nerr == nil) != (err == nil) {
				t.Errorf("NewTransport error %v, Validate %v", nerr, err)
			}
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate = nil")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "abc") {
				t.Errorf("error quotes the token: %q", err)
			}
		})
	}
}

// BenchmarkCredentialReads is what reading every credential file costs each
// query (a CA, a client certificate and key, a token, a header file), next
// to the tens of milliseconds of the query itself.
func BenchmarkCredentialReads(b *testing.B) {
	ca := newTestCA(b, "ca")
	cert, key := ca.issue(b, "client", false)
	dir := b.TempDir()
	files := map[string][]byte{"ca.crt": ca.pem, "tls.crt": cert, "tls.key": key, "token": []byte("token"), "org": []byte("team-a")}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	rt, err := NewTransport(TransportConfig{
		BearerTokenFile: filepath.Join(dir, "token"), CAFile: filepath.Join(dir, "ca.crt"),
		CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
		Headers: []Header{{Name: "X-Scope-OrgID", File: filepath.Join(dir, "org")}},
	})
	if err != nil {
		b.Fatal(err)
	}
	tr := rt.(*transport)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tr.current(); err != nil {
			b.Fatal(err)
		}
		if _, err := readToken(tr.cfg.BearerTokenFile); err != nil {
			b.Fatal(err)
		}
		if _, err := readHeaderFile(tr.cfg.Headers[0]); err != nil {
			b.Fatal(err)
		}
	}
}
