// Package certs gives a server that the kube-apiserver calls (the placement
// webhook, the metrics adapter's aggregated API) a serving certificate when
// none is supplied as files: a self-signed CA and a serving certificate
// signed by it, kept in a Secret so that every replica serves the same
// chain, renewed before they expire, with the CA bundle written into the
// objects the API server reads it from (Targets: a
// MutatingWebhookConfiguration, APIServices) so it verifies the chain.
//
// Order matters when the CA changes: the bundle (new CA plus the old one)
// is published before any certificate of the new CA is served, so a client
// never meets a certificate it cannot verify. The targets are watched, so a
// bundle that is removed, edited or lost with a recreated object is
// restored within seconds.
package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Keys of the Secret.
const (
	KeyCACert   = "ca.crt"
	KeyCAKey    = "ca.key"
	KeyCABundle = "ca-bundle.crt"
	KeyCert     = corev1.TLSCertKey
	KeyKey      = corev1.TLSPrivateKeyKey
)

// Options configure the certificate manager.
type Options struct {
	// Name identifies the chain in logs, in the CA's common name and in the
	// Secret's labels, e.g. "spillway-webhook".
	Name string
	// Targets get the CA bundle. They need not exist: a target is written
	// when it appears.
	Targets []Target
	// SecretNamespace and SecretName hold the chain shared by replicas;
	// with SecretName empty the chain lives in memory only (one replica).
	SecretNamespace, SecretName string
	// Hosts are the DNS names and IP addresses the serving certificate is
	// valid for.
	Hosts []string
	// CAValidity and CertValidity are the lifetimes of new certificates;
	// RenewBefore is how long before expiry they are replaced.
	CAValidity, CertValidity, RenewBefore time.Duration
	// Interval is how often Start re-reads the Secret (expiry, and a chain
	// another replica renewed). The targets are watched, not polled.
	Interval time.Duration
}

// Validate reports every problem with the options.
func (o Options) Validate() error {
	var errs []error
	if o.Name == "" {
		errs = append(errs, errors.New("the chain needs a name"))
	}
	seen := map[string]bool{}
	for _, t := range o.Targets {
		key := targetString(t)
		switch {
		case t.Name() == "":
			errs = append(errs, fmt.Errorf("a %s target has an empty name", t.GroupVersionKind().Kind))
		case seen[key]:
			errs = append(errs, fmt.Errorf("%s is listed twice", key))
		}
		seen[key] = true
	}
	if o.SecretName != "" && o.SecretNamespace == "" {
		errs = append(errs, errors.New("the certificate Secret needs a namespace"))
	}
	if len(o.Hosts) == 0 {
		errs = append(errs, errors.New("the serving certificate needs at least one host"))
	}
	if o.RenewBefore <= 0 || o.CertValidity <= o.RenewBefore || o.CAValidity <= o.CertValidity {
		errs = append(errs, fmt.Errorf("need 0 < renew-before (%s) < certificate validity (%s) < CA validity (%s)", o.RenewBefore, o.CertValidity, o.CAValidity))
	}
	if o.Interval <= 0 {
		errs = append(errs, errors.New("the recheck interval must be positive"))
	}
	return errors.Join(errs...)
}

// The controller's chain: the Secret lives in spillway's own namespace (the
// chart's namespace must match the one below when it is not
// spillway-system), and the webhook configuration is read, watched and
// written by name (the chart narrows all of it with resourceNames).
//
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create;update,namespace=spillway-system
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;list;watch;update

// Manager issues, stores, serves and publishes the chain.
type Manager struct {
	client client.WithWatch
	opts   Options
	clock  clock.Clock

	cert  atomic.Pointer[tls.Certificate]
	state atomic.Pointer[chain] // the served chain
	// latest is the chain last issued in memory (no Secret).
	latest atomic.Pointer[chain]

	mu        sync.Mutex
	missing   map[string]bool // targets last seen missing, logged once
	listeners []func()
}

// New returns a manager; c should read the API server directly (it runs
// before any informer cache has started) and must be able to watch.
func New(c client.WithWatch, opts Options, clk clock.Clock) (*Manager, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Manager{client: c, opts: opts, clock: clk, missing: map[string]bool{}}, nil
}

// GetCertificate serves the current certificate to a TLS listener
// (tls.Config.GetCertificate).
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := m.cert.Load()
	if c == nil {
		return nil, fmt.Errorf("the %s serving certificate is not ready", m.opts.Name)
	}
	return c, nil
}

// CertKeyPEM returns the served certificate and its key as PEM (nil before
// the first Ensure), for servers that take PEM content.
func (m *Manager) CertKeyPEM() (cert, key []byte) {
	if s := m.served(); s != nil {
		return s.certPEM, s.keyPEM
	}
	return nil, nil
}

// OnCertificateChange registers f to be called after the served
// certificate changes.
func (m *Manager) OnCertificateChange(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.listeners = append(m.listeners, f)
}

// CABundle is the PEM bundle clients must trust.
func (m *Manager) CABundle() []byte {
	if s := m.state.Load(); s != nil {
		return s.bundle
	}
	return nil
}

// Register adds the manager to mgr, where it runs on every replica (see
// NeedLeaderElection) and keeps the chain current. It does not issue the
// first chain: call Ensure before mgr starts, since mgr starts its webhook
// server before its other runnables.
func (m *Manager) Register(mgr manager.Manager) error {
	return mgr.Add(m)
}

// NeedLeaderElection is false: every replica serves.
func (m *Manager) NeedLeaderElection() bool { return false }

// Start watches the targets and keeps the chain and the bundles current
// until ctx ends (a controller-runtime Runnable): after every change to a
// target, every Interval, and, after a failure, with a backoff of 1 s
// doubling up to Interval. Failures are logged; the current chain stays.
func (m *Manager) Start(ctx context.Context) error {
	changed := make(chan struct{}, 1)
	for _, t := range m.opts.Targets {
		m.watchTarget(ctx, t, changed)
	}
	var backoff time.Duration
	for {
		wait := m.opts.Interval
		if backoff > 0 {
			wait = backoff
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.clock.After(wait):
		case <-changed:
		}
		if err := m.Ensure(ctx); err != nil {
			log.FromContext(ctx).Error(err, "refreshing the serving certificate", "chain", m.opts.Name)
			backoff = min(max(2*backoff, time.Second), m.opts.Interval)
			continue
		}
		backoff = 0
	}
}

// Ensure makes the chain current (loading, issuing or renewing it), writes
// its bundle into every target, and only then serves it. A missing target is
// not an error: it is logged, and written once it exists.
//
// If the bundle could not be published and the new certificate is signed by
// a CA clients may not trust yet, the current certificate stays in service
// and the error is returned, to be retried.
func (m *Manager) Ensure(ctx context.Context) error {
	ch, err := m.current(ctx)
	if err != nil {
		return err
	}
	pubErr := m.publish(ctx, ch.bundle)
	old := m.served()
	switch {
	case old != nil && bytes.Equal(old.certPEM, ch.certPEM):
		if !bytes.Equal(old.bundle, ch.bundle) {
			m.state.Store(ch)
		}
		return pubErr
	case pubErr != nil && old != nil && !bytes.Equal(old.caPEM, ch.caPEM):
		return fmt.Errorf("still serving the certificate of the previous CA until the new CA bundle is published: %w", pubErr)
	}
	pair, err := tls.X509KeyPair(ch.certPEM, ch.keyPEM)
	if err != nil {
		return fmt.Errorf("loading the serving key pair: %w", err)
	}
	m.state.Store(ch)
	m.cert.Store(&pair)
	m.mu.Lock()
	listeners := slices.Clone(m.listeners)
	m.mu.Unlock()
	for _, f := range listeners {
		f()
	}
	return pubErr
}

// served is the chain whose certificate is being served.
func (m *Manager) served() *chain {
	if m.cert.Load() == nil {
		return nil
	}
	return m.state.Load()
}

// current returns a valid chain: the stored one when still good, otherwise
// a renewed one, stored for the other replicas.
func (m *Manager) current(ctx context.Context) (*chain, error) {
	now := m.clock.Now()
	if m.opts.SecretName == "" {
		// In memory: the last chain issued, served or still waiting for
		// its bundle to be published.
		ch := m.latest.Load()
		if ch.valid(now, m.opts) {
			return ch, nil
		}
		ch, err := renew(ch, now, m.opts)
		if err != nil {
			return nil, err
		}
		m.latest.Store(ch)
		return ch, nil
	}
	for attempt := 0; ; attempt++ {
		secret := &corev1.Secret{}
		key := client.ObjectKey{Namespace: m.opts.SecretNamespace, Name: m.opts.SecretName}
		err := m.client.Get(ctx, key, secret)
		found := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading Secret %s: %w", key, err)
		}
		var stored *chain
		if found {
			stored = parse(secret.Data) // nil when unusable: replaced below
		}
		if stored.valid(now, m.opts) {
			return stored, nil
		}
		ch, err := renew(stored, now, m.opts)
		if err != nil {
			return nil, err
		}
		if found {
			secret.Data = ch.data()
			err = m.client.Update(ctx, secret)
		} else {
			secret = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{"app.kubernetes.io/managed-by": m.opts.Name}},
				Type:       corev1.SecretTypeTLS,
				Data:       ch.data(),
			}
			err = m.client.Create(ctx, secret)
		}
		switch {
		case err == nil:
			log.FromContext(ctx).Info("issued a serving certificate", "chain", m.opts.Name, "secret", key, "hosts", m.opts.Hosts, "notAfter", ch.cert.NotAfter)
			return ch, nil
		case (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) && attempt == 0:
			// Another replica renewed at the same time: use its chain.
			continue
		default:
			return nil, fmt.Errorf("storing the certificate in Secret %s: %w", key, err)
		}
	}
}

// publish writes the bundle into every target.
func (m *Manager) publish(ctx context.Context, bundle []byte) error {
	var errs []error
	for _, t := range m.opts.Targets {
		if err := m.publishTo(ctx, t, bundle); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) publishTo(ctx context.Context, t Target, bundle []byte) error {
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(t.GroupVersionKind())
	if err := m.client.Get(ctx, client.ObjectKey{Name: t.Name()}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			if m.setMissing(t, true) {
				log.FromContext(ctx).Info("not found yet; its CA bundle will be set once it exists", "target", targetString(t))
			}
			return nil
		}
		return fmt.Errorf("reading %s: %w", targetString(t), err)
	}
	m.setMissing(t, false)
	changed, err := t.Inject(obj, bundle)
	if err != nil {
		return fmt.Errorf("%s: %w", targetString(t), err)
	}
	if !changed {
		return nil
	}
	if err := m.client.Update(ctx, obj); err != nil {
		return fmt.Errorf("writing the CA bundle into %s: %w", targetString(t), err)
	}
	log.FromContext(ctx).Info("wrote the CA bundle", "target", targetString(t), "chain", m.opts.Name)
	return nil
}

// setMissing records whether t was missing and reports whether that is news.
func (m *Manager) setMissing(t Target, missing bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := targetString(t)
	news := m.missing[key] != missing
	m.missing[key] = missing
	return news
}

// chain is a CA, a serving certificate it signed, and the bundle to trust
// (the CA, plus the previous CA while it is still valid, so that a CA change
// does not break clients holding the old bundle).
type chain struct {
	ca              *x509.Certificate
	caKey           *ecdsa.PrivateKey
	cert            *x509.Certificate
	caPEM, caKeyPEM []byte
	certPEM, keyPEM []byte
	bundle          []byte
}

func (c *chain) data() map[string][]byte {
	return map[string][]byte{KeyCACert: c.caPEM, KeyCAKey: c.caKeyPEM, KeyCert: c.certPEM, KeyKey: c.keyPEM, KeyCABundle: c.bundle}
}

// parse reads a chain from Secret data, nil when anything is missing or
// malformed.
func parse(data map[string][]byte) *chain {
	ca, err1 := parseCert(data[KeyCACert])
	cert, err2 := parseCert(data[KeyCert])
	caKey, err3 := parseKey(data[KeyCAKey])
	_, err4 := tls.X509KeyPair(data[KeyCert], data[KeyKey])
	if errors.Join(err1, err2, err3, err4) != nil {
		return nil
	}
	// The Secret's fields must belong together, or every renewal would fail
	// (a CA key that is not the CA's, a CA that may not sign) and a new
	// chain is the only way out.
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 || !caKey.PublicKey.Equal(ca.PublicKey) {
		return nil
	}
	return &chain{ca: ca, caKey: caKey, cert: cert, caPEM: data[KeyCACert], caKeyPEM: data[KeyCAKey],
		certPEM: data[KeyCert], keyPEM: data[KeyKey], bundle: cleanBundle(data[KeyCABundle], ca, data[KeyCACert])}
}

// cleanBundle keeps the stored bundle's certificates (an old CA during a
// rotation) but never publishes anything else, and always includes the CA
// the serving certificate chains to: a bundle without it would make the
// API server refuse the webhook or the APIService.
func cleanBundle(stored []byte, ca *x509.Certificate, caPEM []byte) []byte {
	var out []byte
	hasCA := false
	for rest := stored; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if b.Type != "CERTIFICATE" || err != nil || !c.IsCA {
			continue
		}
		hasCA = hasCA || c.Equal(ca)
		out = append(out, pem.EncodeToMemory(b)...)
	}
	if !hasCA {
		out = append(slices.Clone(caPEM), out...)
	}
	return out
}

// valid reports whether neither certificate needs renewing, the serving
// certificate chains to the CA and covers exactly the wanted hosts.
func (c *chain) valid(now time.Time, o Options) bool {
	if c == nil {
		return false
	}
	horizon := now.Add(o.RenewBefore)
	if !horizon.Before(c.ca.NotAfter) || !horizon.Before(c.cert.NotAfter) || now.Before(c.cert.NotBefore) {
		return false
	}
	if c.cert.CheckSignatureFrom(c.ca) != nil {
		return false
	}
	var have []string
	have = append(have, c.cert.DNSNames...)
	for _, ip := range c.cert.IPAddresses {
		have = append(have, ip.String())
	}
	want := slices.Clone(o.Hosts)
	slices.Sort(have)
	slices.Sort(want)
	return slices.Equal(have, slices.Compact(want))
}

// renew issues a serving certificate, under the old CA while it has more
// than RenewBefore left, else under a new CA.
func renew(old *chain, now time.Time, o Options) (*chain, error) {
	ch := &chain{}
	if old != nil && now.Add(o.RenewBefore).Before(old.ca.NotAfter) {
		ch.ca, ch.caKey, ch.caPEM, ch.caKeyPEM, ch.bundle = old.ca, old.caKey, old.caPEM, old.caKeyPEM, old.bundle
	} else {
		var err error
		if ch.ca, ch.caKey, ch.caPEM, ch.caKeyPEM, err = issueCA(o.Name, now, o.CAValidity); err != nil {
			return nil, err
		}
		ch.bundle = slices.Clone(ch.caPEM)
		if old != nil && now.Before(old.ca.NotAfter) {
			ch.bundle = append(ch.bundle, old.caPEM...)
		}
	}
	var err error
	ch.cert, ch.certPEM, ch.keyPEM, err = issueServing(ch.ca, ch.caKey, o.Hosts, now, o.CertValidity)
	return ch, err
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

func issueCA(name string, now time.Time, validity time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("generating the CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s-ca@%d", name, now.Unix())},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("signing the CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	keyPEM, err := encodeKey(key)
	return ca, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, err
}

func issueServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string, now time.Time, validity time.Duration) (*x509.Certificate, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generating the serving key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range slices.Compact(slices.Sorted(slices.Values(hosts))) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("signing the serving certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM, err := encodeKey(key)
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, err
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func parseCert(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func parseKey(p []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("no key")
	}
	return x509.ParseECPrivateKey(b.Bytes)
}
