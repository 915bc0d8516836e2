package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/spillway-dev/spillway/pkg/controller/certs"
)

// certOptions configure the self-managed serving certificate: the adapter
// issues a CA and a certificate for its Service, shares them with its other
// replicas through a Secret, and writes the CA into the caBundle of its
// APIServices, so the kube-apiserver verifies it. Without them the serving
// library's in-memory self-signed certificate is served, which only an
// APIService with insecureSkipTLSVerify accepts.
type certOptions struct {
	SelfManaged   bool
	Namespace     string
	Secret        string
	ServiceName   string
	Hosts         []string
	APIServices   []string
	CheckInterval time.Duration
}

// metricsAPIServices are the APIServices of the groups the adapter serves.
var metricsAPIServices = []string{"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io", "v1beta1.external.metrics.k8s.io"}

func defaultCertOptions() certOptions {
	return certOptions{
		Namespace:     "spillway-system",
		Secret:        "spillway-metrics-adapter-cert",
		ServiceName:   "spillway-metrics-adapter",
		APIServices:   metricsAPIServices,
		CheckInterval: 10 * time.Minute,
	}
}

func (c *certOptions) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&c.SelfManaged, "self-managed-cert", c.SelfManaged,
		"Issue and renew the serving certificate here: a CA and a certificate for the Service's DNS names, kept in --cert-secret so every replica "+
			"serves the same chain, with the CA written into the caBundle of --apiservices (so the kube-apiserver verifies the adapter) before a "+
			"certificate of a new CA is served. Excludes --tls-cert-file. Off, and without --tls-cert-file: an in-memory self-signed certificate that "+
			"only an APIService with insecureSkipTLSVerify accepts (development only).")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace,
		"Namespace the adapter runs in: where --cert-secret lives and the namespace of --service-name.")
	fs.StringVar(&c.Secret, "cert-secret", c.Secret,
		"With --self-managed-cert: the Secret in --namespace that holds the chain (created if missing; the CA 10 years, the certificate 1 year, renewed 30 days before expiry).")
	fs.StringVar(&c.ServiceName, "service-name", c.ServiceName,
		"With --self-managed-cert: the Service the APIServices point at. The kube-apiserver verifies the adapter's certificate for <service>.<namespace>.svc.")
	fs.StringSliceVar(&c.Hosts, "cert-hosts", c.Hosts,
		"With --self-managed-cert: DNS names and IPs of the certificate, comma-separated. Empty: <service>.<namespace>.svc and <service>.<namespace>.svc.cluster.local.")
	fs.StringSliceVar(&c.APIServices, "apiservices", c.APIServices,
		"With --self-managed-cert: the APIServices whose caBundle the adapter writes (and whose insecureSkipTLSVerify it clears), comma-separated. "+
			"They are watched by name: a bundle removed, edited or lost with a recreated APIService is restored within seconds.")
	fs.DurationVar(&c.CheckInterval, "cert-check-interval", c.CheckInterval,
		"With --self-managed-cert: how often the chain is re-read from --cert-secret (a renewal by another replica) and checked for renewal.")
}

func (c *certOptions) validate(tlsCertFile string) []error {
	if !c.SelfManaged {
		return nil
	}
	var errs []error
	if tlsCertFile != "" {
		errs = append(errs, errors.New("--self-managed-cert and --tls-cert-file exclude each other"))
	}
	if c.Namespace == "" {
		errs = append(errs, errors.New("--namespace must not be empty with --self-managed-cert"))
	}
	if c.Secret == "" {
		errs = append(errs, errors.New("--cert-secret must not be empty with --self-managed-cert: replicas share the chain through it"))
	}
	if c.ServiceName == "" && len(c.Hosts) == 0 {
		errs = append(errs, errors.New("--service-name or --cert-hosts must name the certificate's hosts"))
	}
	for _, name := range c.APIServices {
		if name == "" {
			errs = append(errs, errors.New("--apiservices has an empty name"))
		}
	}
	if c.CheckInterval <= 0 {
		errs = append(errs, fmt.Errorf("--cert-check-interval must be positive, got %s", c.CheckInterval))
	}
	return errs
}

func (c *certOptions) hosts() []string {
	if len(c.Hosts) > 0 {
		return c.Hosts
	}
	svc := c.ServiceName + "." + c.Namespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

// selfManagedCert, with --self-managed-cert, makes the chain current and
// its bundle published, has the API server serve it (reloading on
// renewal), and keeps it current until ctx ends. It runs before the server
// is built, so the server never starts without its certificate.
func selfManagedCert(ctx context.Context, o *Options) error {
	c := o.Certs
	if !c.SelfManaged {
		return nil
	}
	// The certificate manager logs through controller-runtime's logger.
	ctrllog.SetLogger(klog.FromContext(ctx))
	ctx = klog.NewContext(ctx, klog.FromContext(ctx).WithName("certs"))

	restCfg, err := o.Adapter.ClientConfig()
	if err != nil {
		return fmt.Errorf("self-managed certificate: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return err
	}
	// Secrets and, unstructured, the APIServices, each read and watched by name.
	kc, err := client.NewWithWatch(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("self-managed certificate: building a client: %w", err)
	}
	targets := make([]certs.Target, 0, len(c.APIServices))
	for _, name := range c.APIServices {
		targets = append(targets, certs.APIService(name))
	}
	m, err := certs.New(kc, certs.Options{
		Name:            binaryName,
		Targets:         targets,
		SecretNamespace: c.Namespace,
		SecretName:      c.Secret,
		Hosts:           c.hosts(),
		CAValidity:      10 * 365 * 24 * time.Hour,
		CertValidity:    365 * 24 * time.Hour,
		RenewBefore:     30 * 24 * time.Hour,
		Interval:        c.CheckInterval,
	}, clock.RealClock{})
	if err != nil {
		return fmt.Errorf("self-managed certificate: %w", err)
	}
	if err := m.Ensure(ctx); err != nil {
		return fmt.Errorf("self-managed certificate: %w", err)
	}
	cfg, err := o.Adapter.Config()
	if err != nil {
		return fmt.Errorf("building the API server configuration: %w", err)
	}
	cfg.GenericConfig.SecureServing.Cert = servingCert{m}
	go func() { _ = m.Start(ctx) }()
	return nil
}

// servingCert hands the manager's certificate to the generic API server,
// which re-reads it whenever the manager renews it.
type servingCert struct{ m *certs.Manager }

var _ dynamiccertificates.CertKeyContentProvider = servingCert{}

func (servingCert) Name() string { return "spillway-self-managed" }

func (s servingCert) CurrentCertKeyContent() ([]byte, []byte) { return s.m.CertKeyPEM() }

func (s servingCert) AddListener(l dynamiccertificates.Listener) { s.m.OnCertificateChange(l.Enqueue) }
