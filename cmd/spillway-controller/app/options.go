package app

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/spillway-dev/spillway/cmd/internal/cli"
	"github.com/spillway-dev/spillway/pkg/placement"
)

const binaryName = "spillway-controller"

// DefaultReservationTTL is --reservation-ttl's default. A reservation only
// has to bridge the time from the webhook's answer to the pod appearing in
// the informer cache, where the pod itself (with its signed reserved node)
// takes over: the rest of the admission chain, the etcd write and the
// watch event, well under a second normally and a few seconds when the API
// server is loaded, and it is dropped the moment the pod is seen. Every
// second longer is a second that a creation which failed after admission,
// or a forged admission review, holds room that real pods then lack.
const DefaultReservationTTL = 5 * time.Second

// Leader-election timing. A killed leader is replaced after at most the
// lease duration plus one retry period; 10s/7s/1s bring that under 15 s
// (client-go's 15s/10s/2s measured 16.5–19 s) for one Lease GET per second
// per follower.
const (
	DefaultLeaseDuration = 10 * time.Second
	DefaultRenewDeadline = 7 * time.Second
	DefaultRetryPeriod   = 1 * time.Second
)

// Options are every setting of spillway-controller; flags fill them.
type Options struct {
	Kubeconfig string
	Namespace  string
	// KubeAPIQPS and KubeAPIBurst rate-limit the controller's requests to
	// the API server (client-go's own defaults, 5 and 10, are for tools:
	// at fleet size the deletion costs and statuses of a burst queued
	// behind them for minutes).
	KubeAPIQPS   float32
	KubeAPIBurst int

	LeaderElect             bool
	LeaderElectionNamespace string
	LeaderElectionID        string
	LeaseDuration           time.Duration
	RenewDeadline           time.Duration
	RetryPeriod             time.Duration

	MetricsBindAddress     string
	HealthProbeBindAddress string
	// PprofBindAddress serves /debug/pprof when set (off by default:
	// profiles expose the process's internals to whoever reaches the port).
	PprofBindAddress string

	WebhookHost        string
	WebhookPort        int
	WebhookCertDir     string
	WebhookConfigName  string
	WebhookCertSecret  string
	WebhookServiceName string
	WebhookCertHosts   []string
	CertCheckInterval  time.Duration

	WebhookClientCAFile string
	WebhookClientNames  []string

	UnitCooldown   time.Duration
	ReservationTTL time.Duration

	HPASyncPeriod time.Duration

	VirtualNodeLabels   map[string]string
	VirtualNodeTaintKey string

	Logging     cli.Logging
	ShowVersion bool
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		Namespace:              "spillway-system",
		KubeAPIQPS:             50,
		KubeAPIBurst:           100,
		LeaderElect:            true,
		LeaderElectionID:       "spillway-controller.spillway.dev",
		LeaseDuration:          DefaultLeaseDuration,
		RenewDeadline:          DefaultRenewDeadline,
		RetryPeriod:            DefaultRetryPeriod,
		MetricsBindAddress:     ":8080",
		HealthProbeBindAddress: ":8081",
		WebhookPort:            9443,
		WebhookConfigName:      "spillway-placement",
		WebhookCertSecret:      "spillway-webhook-cert",
		WebhookServiceName:     "spillway-controller",
		CertCheckInterval:      10 * time.Minute,
		UnitCooldown:           2 * time.Minute,
		ReservationTTL:         DefaultReservationTTL,
		HPASyncPeriod:          15 * time.Second,
		VirtualNodeLabels:      placement.DefaultVirtualNodes().Labels,
		VirtualNodeTaintKey:    placement.DefaultVirtualNodes().TaintKey,
	}
}

func (o *Options) flags() *pflag.FlagSet {
	fs := pflag.NewFlagSet(binaryName, pflag.ContinueOnError)
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig,
		"Path to a kubeconfig. Empty: $KUBECONFIG, then ~/.kube/config, then the in-cluster service account.")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace,
		"Namespace spillway-controller runs in; the default for --leader-election-namespace and where the webhook certificate Secret lives.")

	fs.Float32Var(&o.KubeAPIQPS, "kube-api-qps", o.KubeAPIQPS,
		"Requests per second the controller may send the API server on average (its writes: deletion costs, adoptions, statuses, HPAs); reads come from its cache.")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", o.KubeAPIBurst,
		"Requests the controller may send the API server at once above --kube-api-qps.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect,
		"Run the controllers on one elected replica at a time (a Lease). The webhook is served by every replica regardless.")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace,
		"Namespace of the leader-election Lease. Empty: --namespace.")
	fs.StringVar(&o.LeaderElectionID, "leader-election-id", o.LeaderElectionID,
		"Name of the leader-election Lease.")
	fs.DurationVar(&o.LeaseDuration, "leader-election-lease-duration", o.LeaseDuration,
		"How long a Lease outlives its holder's last renewal: when the leader dies without releasing it (killed, node lost), "+
			"the other replica takes over after at most this plus --leader-election-retry-period. A leader that stops gracefully releases it at once.")
	fs.DurationVar(&o.RenewDeadline, "leader-election-renew-deadline", o.RenewDeadline,
		"How long the leader keeps retrying a failed renewal before it gives up leadership and exits (to be restarted as a follower). "+
			"Shorter than --leader-election-lease-duration, so that it stops before another replica can take over.")
	fs.DurationVar(&o.RetryPeriod, "leader-election-retry-period", o.RetryPeriod,
		"How often the leader renews and the followers try to acquire the Lease.")

	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress,
		`Address of the Prometheus /metrics endpoint (placements, re-placements, deletion-cost patches, webhook latency and errors, plus controller-runtime's). "0" disables it.`)
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", o.HealthProbeBindAddress,
		`Address of /healthz and /readyz (ready once the webhook serves and the informer caches have synced). "0" disables it.`)
	fs.StringVar(&o.PprofBindAddress, "pprof-bind-address", o.PprofBindAddress,
		`Address of /debug/pprof (heap and CPU profiles, for debugging memory and latency); empty (the default) serves none. Bind it to localhost: profiles expose the process's internals.`)

	fs.StringVar(&o.WebhookHost, "webhook-host", o.WebhookHost,
		"Address the placement webhook listens on. Empty: all interfaces.")
	fs.IntVar(&o.WebhookPort, "webhook-port", o.WebhookPort,
		"HTTPS port of the placement webhook (path /spillway/v1/pods/placement).")
	fs.StringVar(&o.WebhookCertDir, "webhook-cert-dir", o.WebhookCertDir,
		"Directory holding tls.crt and tls.key for the webhook (for example from cert-manager); they are reloaded when they change. "+
			"Empty: spillway issues a self-signed chain itself and writes its CA bundle into --webhook-config-name.")
	fs.StringVar(&o.WebhookConfigName, "webhook-config-name", o.WebhookConfigName,
		"Name of the MutatingWebhookConfiguration whose webhooks get the CA bundle of the self-issued chain.")
	fs.StringVar(&o.WebhookCertSecret, "webhook-cert-secret", o.WebhookCertSecret,
		"Secret in --namespace that holds the self-issued chain, so every replica serves the same one. "+
			"Empty: keep it in memory (only correct with a single replica).")
	fs.StringVar(&o.WebhookServiceName, "webhook-service-name", o.WebhookServiceName,
		"Service in front of the webhook; its cluster DNS names go into the self-issued certificate.")
	fs.StringSliceVar(&o.WebhookCertHosts, "webhook-cert-hosts", o.WebhookCertHosts,
		"DNS names and IPs of the self-issued certificate, comma-separated. Empty: <service>.<namespace>.svc, "+
			"<service>.<namespace>.svc.cluster.local, localhost and 127.0.0.1.")
	fs.DurationVar(&o.CertCheckInterval, "webhook-cert-check-interval", o.CertCheckInterval,
		"How often the self-issued chain is re-read from its Secret and checked for renewal (30 days before expiry). "+
			"The webhook configuration is watched, not polled: a CA bundle that is removed, edited or lost with a recreated configuration is restored within seconds.")

	fs.StringVar(&o.WebhookClientCAFile, "webhook-client-ca-file", o.WebhookClientCAFile,
		"PEM bundle of CAs; when set, the webhook accepts only clients presenting a certificate one of them signed for client authentication "+
			"(re-read when the file changes). Give kube-apiserver that client certificate through its AdmissionConfiguration "+
			"(WebhookAdmission kubeConfigFile, docs/resourcepolicy.md) so that nobody else can post admission reviews. Empty: any client is served.")
	fs.StringSliceVar(&o.WebhookClientNames, "webhook-client-names", o.WebhookClientNames,
		"With --webhook-client-ca-file: the client certificate's common name or one of its DNS names must be one of these, comma-separated. "+
			"Empty: any certificate the CA signed for client authentication (use a CA that signs nothing else).")

	fs.DurationVar(&o.UnitCooldown, "unit-cooldown", o.UnitCooldown,
		"After a pod is re-placed away from a unit where it could not schedule, how long new pods skip that unit.")
	fs.DurationVar(&o.ReservationTTL, "reservation-ttl", o.ReservationTTL,
		"How long an admitted placement holds its unit slot and node room while its pod has not yet appeared in the cache; "+
			"it is dropped as soon as the pod appears. Keep it to seconds: a placement whose pod never comes (a failed creation) holds room this long.")

	fs.DurationVar(&o.HPASyncPeriod, "hpa-sync-period", o.HPASyncPeriod,
		"Must equal kube-controller-manager's --horizontal-pod-autoscaler-sync-period. The HPA re-reads its metric once per period, "+
			"so an InferenceScaler's fallback.failureThreshold of N means N periods of failed reads before its fallback floor applies.")

	fs.StringToStringVar(&o.VirtualNodeLabels, "virtual-node-labels", o.VirtualNodeLabels,
		"Labels every virtual node carries (key=value, comma-separated): a ResourcePolicy unit with resource eci or acs and no nodeSelector selects these nodes. "+
			"Default: virtual-kubelet's type=virtual-kubelet.")
	fs.StringVar(&o.VirtualNodeTaintKey, "virtual-node-taint-key", o.VirtualNodeTaintKey,
		"Key of the taint virtual nodes carry; pods placed on a virtual unit (resource eci or acs) get a toleration for it (operator Exists). Empty adds none.")

	o.Logging.AddFlags(fs, "1 adds every placement decision and deletion-cost patch, higher adds controller-runtime detail.")
	fs.BoolVar(&o.ShowVersion, "version", false, "Print the version and exit.")
	return fs
}

// Validate reports every problem at once.
func (o *Options) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.Namespace == "" {
		add("--namespace must not be empty")
	}
	if !(o.KubeAPIQPS > 0) {
		add("--kube-api-qps must be positive, got %v", o.KubeAPIQPS)
	}
	if o.KubeAPIBurst < 1 {
		add("--kube-api-burst must be at least 1, got %d", o.KubeAPIBurst)
	}
	if o.LeaderElect && o.LeaderElectionID == "" {
		add("--leader-election-id must not be empty with --leader-elect")
	}
	if o.LeaderElect {
		// client-go's own rules, checked here so they read as flag errors:
		// it jitters the retry period by up to 20%.
		if o.RetryPeriod <= 0 {
			add("--leader-election-retry-period must be positive")
		}
		if o.RenewDeadline <= time.Duration(1.2*float64(o.RetryPeriod)) {
			add("--leader-election-renew-deadline (%s) must be longer than 1.2 × --leader-election-retry-period (%s)", o.RenewDeadline, o.RetryPeriod)
		}
		if o.LeaseDuration <= o.RenewDeadline {
			add("--leader-election-lease-duration (%s) must be longer than --leader-election-renew-deadline (%s)", o.LeaseDuration, o.RenewDeadline)
		}
	}
	for _, fa := range [][2]string{{"--metrics-bind-address", o.MetricsBindAddress}, {"--health-probe-bind-address", o.HealthProbeBindAddress}} {
		flag, addr := fa[0], fa[1]
		if addr == "0" {
			continue
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			add("%s %q: %v", flag, addr, err)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			add("%s %q: bad port", flag, addr)
		}
	}
	if o.WebhookPort < 1 || o.WebhookPort > 65535 {
		add("--webhook-port %d is outside 1-65535", o.WebhookPort)
	}
	if o.WebhookCertDir != "" {
		for _, f := range []string{"tls.crt", "tls.key"} {
			if _, err := os.Stat(filepath.Join(o.WebhookCertDir, f)); err != nil {
				add("--webhook-cert-dir: %v", err)
			}
		}
	} else {
		if o.WebhookConfigName == "" {
			add("--webhook-config-name must not be empty when spillway issues the webhook certificate")
		}
		if o.WebhookServiceName == "" && len(o.WebhookCertHosts) == 0 {
			add("--webhook-service-name or --webhook-cert-hosts must name the webhook's hosts")
		}
		if o.CertCheckInterval <= 0 {
			add("--webhook-cert-check-interval must be positive")
		}
	}
	if o.WebhookClientCAFile != "" {
		if _, err := os.Stat(o.WebhookClientCAFile); err != nil {
			add("--webhook-client-ca-file: %v", err)
		}
	} else if len(o.WebhookClientNames) > 0 {
		add("--webhook-client-names needs --webhook-client-ca-file")
	}
	if o.UnitCooldown <= 0 {
		add("--unit-cooldown must be positive")
	}
	if o.ReservationTTL <= 0 {
		add("--reservation-ttl must be positive")
	}
	if o.HPASyncPeriod <= 0 {
		add("--hpa-sync-period must be positive")
	}
	if len(o.VirtualNodeLabels) == 0 {
		add("--virtual-node-labels must name at least one label")
	}
	for k, v := range o.VirtualNodeLabels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			add("--virtual-node-labels: key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			add("--virtual-node-labels: value %q of %s: %s", v, k, strings.Join(errs, "; "))
		}
	}
	if k := o.VirtualNodeTaintKey; k != "" {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			add("--virtual-node-taint-key %q: %s", k, strings.Join(errs, "; "))
		}
	}
	if err := o.Logging.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// leaderElectionNamespace applies the default.
func (o *Options) leaderElectionNamespace() string {
	if o.LeaderElectionNamespace != "" {
		return o.LeaderElectionNamespace
	}
	return o.Namespace
}

// certHosts applies the default.
func (o *Options) certHosts() []string {
	if len(o.WebhookCertHosts) > 0 {
		return o.WebhookCertHosts
	}
	svc := o.WebhookServiceName + "." + o.Namespace + ".svc"
	return []string{svc, svc + ".cluster.local", "localhost", "127.0.0.1"}
}
