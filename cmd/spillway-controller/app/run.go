// Package app is spillway-controller's flags, wiring and run loop.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"

	// InferenceScaler schedules name IANA zones; embed the tz database so
	// they do not depend on the image having /usr/share/zoneinfo.
	_ "time/tzdata"

	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/spillway-dev/spillway/cmd/internal/cli"
	"github.com/spillway-dev/spillway/cmd/internal/serving"
	"github.com/spillway-dev/spillway/pkg/controller"
	"github.com/spillway-dev/spillway/pkg/controller/certs"
	"github.com/spillway-dev/spillway/pkg/controller/placementwebhook"
	"github.com/spillway-dev/spillway/pkg/kubescheme"
	"github.com/spillway-dev/spillway/pkg/placement"
	"github.com/spillway-dev/spillway/pkg/version"
)

const usageHeader = `spillway-controller runs spillway's controllers and webhooks:

  - the ResourcePolicy placement webhook (pod CREATE): pins each selected pod to
    the first unit, in order, that is under its max and has room, so pods fill
    on-prem nodes first and spill to the autoscaled cloud pool;
  - re-placement of pods stuck unschedulable on an earlier unit past the grace;
  - controller.kubernetes.io/pod-deletion-cost on selected pods, so scale-in
    removes cloud pods before on-prem ones;
  - ResourcePolicy status;
  - InferenceScaler: one HPA per InferenceScaler, with schedule floors and a
    fallback floor while the HPA cannot read its metric (docs/inferencescaler.md).

Every replica serves the webhook; the controllers run on the elected leader.
Register the webhook with failurePolicy: Ignore and a short timeout (see
docs/resourcepolicy.md) so pod creation never waits on spillway.

Usage:
  spillway-controller [flags]

Flags:
`

// Run parses args and runs the controller until ctx ends.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := NewOptions()
	fs := o.flags()
	done, err := cli.Command{
		Binary:      binaryName,
		Flags:       fs,
		Help:        func() string { return usageHeader + fs.FlagUsages() },
		ShowVersion: &o.ShowVersion,
		Validate:    o.Validate,
	}.Parse(args, stdout)
	if done || err != nil {
		return err
	}
	ctx, logger, err := o.Logging.Setup(ctx, stderr)
	if err != nil {
		return err
	}
	cli.MemoryLimit(logger, cli.CgroupRoot)
	// controller-runtime keeps its own global logger; it gets the same one.
	ctrl.SetLogger(logger)
	cfg, err := serving.RestConfig(binaryName, o.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = o.KubeAPIQPS, o.KubeAPIBurst
	return run(ctx, o, cfg)
}

func run(ctx context.Context, o *Options, cfg *rest.Config) error {
	log := ctrl.Log.WithName("setup")
	scheme, err := kubescheme.New()
	if err != nil {
		return err
	}
	clk := clock.RealClock{}

	webhookOpts := webhook.Options{Host: o.WebhookHost, Port: o.WebhookPort, CertDir: o.WebhookCertDir}
	var certManager *certs.Manager
	if o.WebhookCertDir == "" {
		// Direct (no cache): it runs before the manager's informers start,
		// and it watches only the webhook configuration, by name.
		direct, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
		if err != nil {
			return fmt.Errorf("building a client: %w", err)
		}
		certManager, err = certs.New(direct, certs.Options{
			Name:            binaryName,
			Targets:         []certs.Target{certs.WebhookConfiguration(o.WebhookConfigName)},
			SecretNamespace: o.Namespace,
			SecretName:      o.WebhookCertSecret,
			Hosts:           o.certHosts(),
			CAValidity:      10 * 365 * 24 * time.Hour,
			CertValidity:    365 * 24 * time.Hour,
			RenewBefore:     30 * 24 * time.Hour,
			Interval:        o.CertCheckInterval,
		}, clk)
		if err != nil {
			return fmt.Errorf("webhook certificate: %w", err)
		}
		// Before the webhook listens, so it never serves without a chain.
		if err := certManager.Ensure(ctx); err != nil {
			return fmt.Errorf("webhook certificate: %w", err)
		}
		webhookOpts.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = certManager.GetCertificate }}
	}

	// Placement signatures are keyed by a secret every replica shares: the
	// webhook's serving key (see placementwebhook.KeySource).
	placementKeys := placementwebhook.FileKeySource(filepath.Join(o.WebhookCertDir, "tls.key"), 10*time.Second, clk.Now)
	if certManager != nil {
		placementKeys = placementwebhook.CertKeySource(certManager.GetCertificate)
	}
	var clientAuth *placementwebhook.ClientAuth
	if o.WebhookClientCAFile != "" {
		clientAuth, err = placementwebhook.NewClientAuth(o.WebhookClientCAFile, o.WebhookClientNames, 10*time.Second, clk.Now)
		if err != nil {
			return err
		}
		webhookOpts.TLSOpts = append(webhookOpts.TLSOpts, clientAuth.Configure)
		if len(o.WebhookClientNames) == 0 {
			log.Info("the webhook accepts any client certificate its client CA signed; set --webhook-client-names unless that CA signs nothing else")
		}
	}

	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress:        o.HealthProbeBindAddress,
		PprofBindAddress:              o.PprofBindAddress,
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              o.LeaderElectionID,
		LeaderElectionNamespace:       o.leaderElectionNamespace(),
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &o.LeaseDuration,
		RenewDeadline:                 &o.RenewDeadline,
		RetryPeriod:                   &o.RetryPeriod,
		WebhookServer:                 webhook.NewServer(webhookOpts),
		// Every pod and node is cached, as slim copies (controller.CacheOptions).
		Cache: controller.CacheOptions(),
	})
	if err != nil {
		return fmt.Errorf("building the manager: %w", err)
	}
	if err := controller.Register(mgr, controller.Deps{
		Registerer:     metrics.Registry,
		Clock:          clk,
		Certificates:   certManager,
		UnitCooldown:   o.UnitCooldown,
		ReservationTTL: o.ReservationTTL,
		PlacementKeys:  placementKeys,
		// With Configure above: a review without the certificate is refused.
		WebhookClientAuth: clientAuth,
		HPASyncPeriod:     o.HPASyncPeriod,
		VirtualNodes:      placement.VirtualNodes{Labels: o.VirtualNodeLabels, TaintKey: o.VirtualNodeTaintKey},
	}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("informers", func(req *http.Request) error {
		c, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(c) {
			return errors.New("informer caches not synced")
		}
		return nil
	}); err != nil {
		return err
	}
	log.Info("starting", "version", version.String(binaryName), "leaderElection", o.LeaderElect, "webhookPort", o.WebhookPort)
	return mgr.Start(ctx)
}
