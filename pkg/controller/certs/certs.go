// Package certs gives the placement webhook a serving certificate when none
// is supplied as files: a self-signed CA and a serving certificate signed by
// it, kept in a Secret so that every replica serves the same chain, renewed
// before they expire, with the CA bundle written into the
// MutatingWebhookConfiguration so the API server trusts the chain.
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
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
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
	// WebhookConfigName is the MutatingWebhookConfiguration whose webhooks
	// get the CA bundle.
	WebhookConfigName string
	// SecretNamespace and SecretName hold the chain shared by replicas;
	// with SecretName empty the chain lives in memory only (one replica).
	SecretNamespace, SecretName string
	// Hosts are the DNS names and IP addresses the serving certificate is
	// valid for.
	Hosts []string
	// CAValidity and CertValidity are the lifetimes of new certificates;
	// RenewBefore is how long before expiry they are replaced.
	CAValidity, CertValidity, RenewBefore time.Duration
	// Interval is how often Start rechecks the chain and the bundle.
	Interval time.Duration
}

// Validate reports every problem with the options.
func (o Options) Validate() error {
	var errs []error
	if o.WebhookConfigName == "" {
		errs = append(errs, errors.New("the MutatingWebhookConfiguration name is empty"))
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

// The Secret lives in spillway's own namespace; the chart's namespace must
// match the one below when it is not spillway-system.
//
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create;update,namespace=spillway-system
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;update

// Manager issues, stores, serves and publishes the chain.
type Manager struct {
	client client.Client
	opts   Options
	clock  clock.Clock

	cert   atomic.Pointer[tls.Certificate]
	state  atomic.Pointer[chain]
	warned atomic.Bool
}

// New returns a manager; c should read the API server directly (it runs
// before the manager's cache starts).
func New(c client.Client, opts Options, clk clock.Clock) (*Manager, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Manager{client: c, opts: opts, clock: clk}, nil
}

// GetCertificate serves the current certificate to the webhook's TLS
// listener (tls.Config.GetCertificate).
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := m.cert.Load()
	if c == nil {
		return nil, errors.New("the webhook serving certificate is not ready")
	}
	return c, nil
}

// CABundle is the PEM bundle clients must trust.
func (m *Manager) CABundle() []byte {
	if s := m.state.Load(); s != nil {
		return s.bundle
	}
	return nil
}

// NeedLeaderElection is false: every replica serves the webhook.
func (m *Manager) NeedLeaderElection() bool { return false }

// Start rechecks the chain every Interval until ctx ends (a manager
// Runnable). Failures are logged and retried; the current chain stays.
func (m *Manager) Start(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.clock.After(m.opts.Interval):
			if err := m.Ensure(ctx); err != nil {
				log.FromContext(ctx).Error(err, "refreshing the webhook certificate")
			}
		}
	}
}

// Ensure makes the chain current (loading, issuing or renewing it) and the
// CA bundle published. A missing webhook configuration is not an error: it
// is logged, and the bundle is written once the configuration exists.
func (m *Manager) Ensure(ctx context.Context) error {
	ch, err := m.current(ctx)
	if err != nil {
		return err
	}
	if old := m.state.Load(); old == nil || !bytes.Equal(old.certPEM, ch.certPEM) || !bytes.Equal(old.bundle, ch.bundle) {
		pair, err := tls.X509KeyPair(ch.certPEM, ch.keyPEM)
		if err != nil {
			return fmt.Errorf("loading the serving key pair: %w", err)
		}
		m.cert.Store(&pair)
		m.state.Store(ch)
	}
	return m.publish(ctx, ch.bundle)
}

// current returns a valid chain: the stored one when still good, otherwise
// a renewed one, stored for the other replicas.
func (m *Manager) current(ctx context.Context) (*chain, error) {
	now := m.clock.Now()
	if m.opts.SecretName == "" {
		ch := m.state.Load()
		if ch.valid(now, m.opts) {
			return ch, nil
		}
		return renew(ch, now, m.opts)
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
				ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{"app.kubernetes.io/managed-by": "spillway-controller"}},
				Type:       corev1.SecretTypeTLS,
				Data:       ch.data(),
			}
			err = m.client.Create(ctx, secret)
		}
		switch {
		case err == nil:
			log.FromContext(ctx).Info("issued the webhook serving certificate", "secret", key, "hosts", m.opts.Hosts, "notAfter", ch.cert.NotAfter)
			return ch, nil
		case (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) && attempt == 0:
			// Another replica renewed at the same time: use its chain.
			continue
		default:
			return nil, fmt.Errorf("storing the certificate in Secret %s: %w", key, err)
		}
	}
}

// publish writes the bundle into every webhook of the configuration.
func (m *Manager) publish(ctx context.Context, bundle []byte) error {
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := m.client.Get(ctx, client.ObjectKey{Name: m.opts.WebhookConfigName}, cfg); err != nil {
		if apierrors.IsNotFound(err) {
			if !m.warned.Swap(true) {
				log.FromContext(ctx).Info("MutatingWebhookConfiguration not found yet; its CA bundle will be set once it exists", "name", m.opts.WebhookConfigName)
			}
			return nil
		}
		return fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", m.opts.WebhookConfigName, err)
	}
	m.warned.Store(false)
	changed := false
	for i := range cfg.Webhooks {
		if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, bundle) {
			cfg.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := m.client.Update(ctx, cfg); err != nil {
		return fmt.Errorf("writing the CA bundle into MutatingWebhookConfiguration %s: %w", m.opts.WebhookConfigName, err)
	}
	log.FromContext(ctx).Info("wrote the CA bundle into the webhook configuration", "name", m.opts.WebhookConfigName)
	return nil
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
	bundle := data[KeyCABundle]
	if len(bundle) == 0 {
		bundle = data[KeyCACert]
	}
	return &chain{ca: ca, caKey: caKey, cert: cert, caPEM: data[KeyCACert], caKeyPEM: data[KeyCAKey],
		certPEM: data[KeyCert], keyPEM: data[KeyKey], bundle: bundle}
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
		if ch.ca, ch.caKey, ch.caPEM, ch.caKeyPEM, err = issueCA(now, o.CAValidity); err != nil {
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

func issueCA(now time.Time, validity time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte, error) {
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
		Subject:               pkix.Name{CommonName: fmt.Sprintf("spillway-webhook-ca@%d", now.Unix())},
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
