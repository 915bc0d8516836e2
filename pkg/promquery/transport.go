package promquery

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// TransportConfig is what a Prometheus-compatible server behind
// authentication needs from the client: a bearer token, a CA to verify it
// by, a client certificate, extra headers (Mimir's and Cortex's tenant
// header X-Scope-OrgID, say). Every file is read again on each request, so
// a rotated token, certificate or CA (a Secret volume Kubernetes updates in
// place) is used from the next refresh on without a restart.
type TransportConfig struct {
	// BearerTokenFile holds a token sent as "Authorization: Bearer <token>"
	// (surrounding whitespace trimmed). It is never logged.
	BearerTokenFile string
	// CAFile is a PEM bundle: the only CAs the server's certificate may
	// chain to. Empty: the system's roots.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key, given
	// together.
	CertFile, KeyFile string
	// Headers are added to every request.
	Headers []Header
}

// Header is one extra request header: a fixed Value, or the content of File
// (surrounding whitespace trimmed), read on each request, for values that
// are secrets.
type Header struct {
	Name  string
	Value string
	File  string
}

// CredentialsError says a credential file could not be used, so no request
// was sent. Its message names the file, never its content.
type CredentialsError struct {
	// What is "bearer token file", "CA file", "client certificate" or
	// `header "<name>" file`.
	What string
	Path string
	Err  error
}

func (e *CredentialsError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.What, e.Path, e.Err)
}

func (e *CredentialsError) Unwrap() error { return e.Err }

// notConfigurable are headers the HTTP client sets or that only make sense
// per connection (hop-by-hop): a fixed value would break the exchange
// (Content-Type of the form post, Accept-Encoding disables transparent
// gzip) or be ignored (Host).
var notConfigurable = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Host": true, "Content-Length": true, "Content-Type": true, "Accept-Encoding": true,
}

// Validate reports every problem at once, reading every file as a request
// would.
func (c TransportConfig) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for _, h := range c.Headers {
		name := http.CanonicalHeaderKey(h.Name)
		switch {
		case !httpguts.ValidHeaderFieldName(h.Name):
			errs = append(errs, fmt.Errorf("header name %q is not a valid HTTP header name", h.Name))
			continue
		case notConfigurable[name]:
			errs = append(errs, fmt.Errorf("header %q is set by the HTTP client itself and cannot be configured", h.Name))
		case name == "Authorization" && c.BearerTokenFile != "":
			errs = append(errs, fmt.Errorf("header %q conflicts with the bearer token file, which sets it", h.Name))
		case seen[name]:
			errs = append(errs, fmt.Errorf("header %q is given twice", h.Name))
		}
		seen[name] = true
		switch {
		case h.File != "" && h.Value != "":
			errs = append(errs, fmt.Errorf("header %q has both a value and a file", h.Name))
		case h.File != "":
			if _, err := readHeaderFile(h); err != nil {
				errs = append(errs, err)
			}
		case h.Value == "":
			errs = append(errs, fmt.Errorf("header %q has an empty value", h.Name))
		case !httpguts.ValidHeaderFieldValue(h.Value):
			errs = append(errs, fmt.Errorf("header %q: the value has characters not allowed in an HTTP header", h.Name))
		}
	}
	if c.BearerTokenFile != "" {
		if _, err := readToken(c.BearerTokenFile); err != nil {
			errs = append(errs, err)
		}
	}
	if c.KeyFile != "" && c.CertFile == "" {
		errs = append(errs, errors.New("a client key needs its client certificate"))
	}
	if c.CertFile != "" && c.KeyFile == "" {
		errs = append(errs, errors.New("a client certificate needs its key"))
	}
	if _, err := c.loadTLS(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// NewTransport validates c and returns a RoundTripper that adds c's
// credentials to every request, reading their files each time.
func NewTransport(c TransportConfig) (http.RoundTripper, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	t := &transport{cfg: c}
	if !c.hasTLSFiles() {
		t.inner = newHTTPTransport(nil)
	}
	return t, nil
}

func (c TransportConfig) hasTLSFiles() bool {
	return c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
}

// transport adds credentials and carries requests over an http.Transport
// built for the current TLS files; when they change it builds a new one
// (connections of the old one drain and close).
type transport struct {
	cfg TransportConfig

	mu      sync.Mutex
	inner   *http.Transport
	tlsSeen tlsFiles
}

// tlsFiles are the contents the current inner transport was built from.
type tlsFiles struct {
	ca, cert, key []byte
	pool          *x509.CertPool
	pair          *tls.Certificate
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	fail := func(err error) (*http.Response, error) {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body on every path
		}
		return nil, err
	}
	inner, err := t.current()
	if err != nil {
		return fail(err)
	}
	r := req.Clone(req.Context())
	for _, h := range t.cfg.Headers {
		v := h.Value
		if h.File != "" {
			if v, err = readHeaderFile(h); err != nil {
				return fail(err)
			}
		}
		r.Header.Set(h.Name, v)
	}
	if t.cfg.BearerTokenFile != "" {
		token, err := readToken(t.cfg.BearerTokenFile)
		if err != nil {
			return fail(err)
		}
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return inner.RoundTrip(r)
}

// current returns the transport for the TLS files as they are now. The
// files are read on every request but parsed only when they changed.
func (t *transport) current() (*http.Transport, error) {
	if !t.cfg.hasTLSFiles() {
		return t.inner, nil
	}
	files, err := t.cfg.readTLS()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.inner != nil && files.same(t.tlsSeen) {
		return t.inner, nil
	}
	if err := t.cfg.parseTLS(&files); err != nil {
		return nil, err
	}
	if t.inner != nil {
		t.inner.CloseIdleConnections()
	}
	t.inner, t.tlsSeen = newHTTPTransport(tlsConfig(files)), files
	return t.inner, nil
}

// loadTLS reads and parses the TLS files (none configured: zero value).
func (c TransportConfig) loadTLS() (tlsFiles, error) {
	f, err := c.readTLS()
	if err != nil {
		return f, err
	}
	return f, c.parseTLS(&f)
}

// readTLS reads the TLS files that are configured.
func (c TransportConfig) readTLS() (tlsFiles, error) {
	var f tlsFiles
	var errs []error
	if c.CAFile != "" {
		var err error
		if f.ca, err = os.ReadFile(c.CAFile); err != nil {
			errs = append(errs, &CredentialsError{What: "CA file", Path: c.CAFile, Err: err})
		}
	}
	if c.CertFile != "" && c.KeyFile != "" {
		var errC, errK error
		f.cert, errC = os.ReadFile(c.CertFile)
		f.key, errK = os.ReadFile(c.KeyFile)
		if err := errors.Join(errC, errK); err != nil {
			errs = append(errs, &CredentialsError{What: "client certificate", Path: c.CertFile + " (key " + c.KeyFile + ")", Err: err})
		}
	}
	return f, errors.Join(errs...)
}

// parseTLS fills f's CA pool and key pair from its contents.
func (c TransportConfig) parseTLS(f *tlsFiles) error {
	var errs []error
	if f.ca != nil {
		f.pool = x509.NewCertPool()
		if !f.pool.AppendCertsFromPEM(f.ca) {
			errs = append(errs, &CredentialsError{What: "CA file", Path: c.CAFile, Err: errors.New("no PEM certificate in it")})
		}
	}
	if f.cert != nil || f.key != nil {
		pair, err := tls.X509KeyPair(f.cert, f.key)
		if err != nil {
			errs = append(errs, &CredentialsError{What: "client certificate", Path: c.CertFile + " (key " + c.KeyFile + ")", Err: err})
		} else {
			f.pair = &pair
		}
	}
	return errors.Join(errs...)
}

// same reports whether f has the contents of o.
func (f tlsFiles) same(o tlsFiles) bool {
	return bytes.Equal(f.ca, o.ca) && bytes.Equal(f.cert, o.cert) && bytes.Equal(f.key, o.key)
}

// tlsConfig verifies the server with the given CAs (or the system's) and
// always offers the client certificate: the server's list of acceptable
// CAs is not consulted, so an intermediate-issued certificate is sent too.
func tlsConfig(f tlsFiles) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: f.pool}
	if pair := f.pair; pair != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return pair, nil }
	}
	return c
}

// newHTTPTransport is Go's default transport (proxy from the environment,
// its timeouts, HTTP/2) with the given TLS configuration.
func newHTTPTransport(tc *tls.Config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if tc != nil {
		t.TLSClientConfig = tc
	}
	return t
}

// readToken reads a bearer token file. Errors never quote the token.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", &CredentialsError{What: "bearer token file", Path: path, Err: err}
	}
	token := strings.TrimSpace(string(b))
	switch {
	case token == "":
		return "", &CredentialsError{What: "bearer token file", Path: path, Err: errors.New("it is empty")}
	case !httpguts.ValidHeaderFieldValue(token):
		return "", &CredentialsError{What: "bearer token file", Path: path, Err: errors.New("the token has characters not allowed in an HTTP header")}
	}
	return token, nil
}

// readHeaderFile reads a header's value from its file. Errors never quote
// the value.
func readHeaderFile(h Header) (string, error) {
	what := fmt.Sprintf("header %q file", h.Name)
	b, err := os.ReadFile(h.File)
	if err != nil {
		return "", &CredentialsError{What: what, Path: h.File, Err: err}
	}
	v := strings.TrimSpace(string(b))
	switch {
	case v == "":
		return "", &CredentialsError{What: what, Path: h.File, Err: errors.New("it is empty")}
	case !httpguts.ValidHeaderFieldValue(v):
		return "", &CredentialsError{What: what, Path: h.File, Err: errors.New("the value has characters not allowed in an HTTP header")}
	}
	return v, nil
}
