package localcluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// AdminUser is the user the admin token authenticates as (group system:masters).
const AdminUser = "spillway-admin"

func (c *Cluster) log() io.Writer {
	if c.opts.Log == nil {
		return io.Discard
	}
	return c.opts.Log
}

// Start builds what is missing, then starts etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kwok and (unless NoKarpenter)
// Karpenter's kwok provider, and waits until they serve. On error everything
// already started is stopped.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.HPASyncPeriod == 0 {
		opts.HPASyncPeriod = 5 * time.Second
	}
	c := &Cluster{opts: opts, dir: opts.Dir}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "spillway-cluster-"); err != nil {
			return nil, err
		}
	} else if err = os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.DumpLogs(c.log(), 3000)
			_ = c.Stop()
		}
	}()

	if c.bins, err = EnsureBinaries(ctx, c.log()); err != nil {
		return nil, err
	}
	p, err := FreePorts(8)
	if err != nil {
		return nil, err
	}
	c.ports = ports{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]}
	pk, err := writePKI(filepath.Join(c.dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("writing certificates: %w", err)
	}
	c.adminTok = randomToken()
	tokens := filepath.Join(c.dir, "pki", "tokens.csv")
	if err := os.WriteFile(tokens, []byte(fmt.Sprintf("%s,%s,%s,\"system:masters\"\n", c.adminTok, AdminUser, AdminUser)), 0o600); err != nil {
		return nil, err
	}
	host := fmt.Sprintf("https://127.0.0.1:%d", c.ports.apiserver)
	c.cfg = &rest.Config{
		Host:            host,
		BearerToken:     c.adminTok,
		TLSClientConfig: rest.TLSClientConfig{CAData: pk.caPEM},
		QPS:             100,
		Burst:           200,
	}
	if err := writeKubeconfig(c.KubeconfigPath(), host, pk.caPEM, c.adminTok); err != nil {
		return nil, err
	}
	if c.client, err = kubernetes.NewForConfig(c.cfg); err != nil {
		return nil, err
	}

	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, pk, tokens); err != nil {
		return nil, err
	}
	if err := c.startControllerManager(pk); err != nil {
		return nil, err
	}
	if _, err := c.StartProcess("kube-scheduler", c.bins.KubeScheduler, []string{
		"--kubeconfig=" + c.KubeconfigPath(),
		"--authentication-kubeconfig=" + c.KubeconfigPath(),
		"--authorization-kubeconfig=" + c.KubeconfigPath(),
		"--bind-address=127.0.0.1",
		"--secure-port=" + itoa(c.ports.scheduler),
		"--leader-elect=false",
	}, nil); err != nil {
		return nil, err
	}
	if err := c.startKwok(); err != nil {
		return nil, err
	}
	if err := c.waitDefaultServiceAccount(ctx); err != nil {
		return nil, err
	}
	if !opts.NoKarpenter {
		if err := c.startKarpenter(ctx); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(c.log(), "[localcluster] cluster ready at %s (kubeconfig %s)\n", host, c.KubeconfigPath())
	return c, nil
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeKubeconfig(path, host string, caPEM []byte, token string) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
`, host, base64.StdEncoding.EncodeToString(caPEM), token)
	return os.WriteFile(path, []byte(kc), 0o600)
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	client := fmt.Sprintf("http://127.0.0.1:%d", c.ports.etcdClient)
	peer := fmt.Sprintf("http://127.0.0.1:%d", c.ports.etcdPeer)
	if _, err := c.StartProcess("etcd", c.bins.Etcd, []string{
		"--name=local",
		"--data-dir=" + filepath.Join(c.dir, "etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=local=" + peer,
		// Test data is disposable; fsync dominates etcd's latency on a
		// shared disk.
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	}, nil); err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return Poll(wctx, 200*time.Millisecond, "etcd health", func(context.Context) (bool, error) {
		resp, err := hc.Get(client + "/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

func (c *Cluster) startAPIServer(ctx context.Context, pk *pki, tokens string) error {
	webhookClient, err := writeWebhookClientConfig(pk.dir)
	if err != nil {
		return fmt.Errorf("writing the webhook client configuration: %w", err)
	}
	if _, err := c.StartProcess("kube-apiserver", c.bins.KubeAPIServer, append([]string{
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", c.ports.etcdClient),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + itoa(c.ports.apiserver),
		"--tls-cert-file=" + pk.ServerCert,
		"--tls-private-key-file=" + pk.ServerKey,
		"--client-ca-file=" + pk.CACert,
		"--token-auth-file=" + tokens,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + pk.SAPub,
		"--service-account-signing-key-file=" + pk.SAKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		// Loopback addresses are rejected for the kubernetes Service's
		// endpoints; nothing in this cluster needs them.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--requestheader-client-ca-file=" + pk.FrontProxyCA,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + pk.ProxyClientCert,
		"--proxy-client-key-file=" + pk.ProxyClientKey,
		"--profiling=false",
		"--v=1",
	}, webhookClient...), nil); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return Poll(wctx, 500*time.Millisecond, "kube-apiserver /readyz", func(ctx context.Context) (bool, error) {
		body, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Raw()
		if err != nil {
			return false, fmt.Errorf("%w: %s", err, tail(string(body), 300))
		}
		return true, nil
	})
}

func (c *Cluster) startControllerManager(pk *pki) error {
	_, err := c.StartProcess("kube-controller-manager", c.bins.KubeControllerManager, []string{
		"--kubeconfig=" + c.KubeconfigPath(),
		"--authentication-kubeconfig=" + c.KubeconfigPath(),
		"--authorization-kubeconfig=" + c.KubeconfigPath(),
		"--bind-address=127.0.0.1",
		"--secure-port=" + itoa(c.ports.kcm),
		"--leader-elect=false",
		// Tokens come from the TokenRequest API; the legacy token
		// controller would only add secrets nobody reads.
		"--controllers=*,-serviceaccount-token",
		"--service-account-private-key-file=" + pk.SAKey,
		"--root-ca-file=" + pk.CACert,
		"--horizontal-pod-autoscaler-sync-period=" + c.opts.HPASyncPeriod.String(),
		"--use-service-account-credentials=false",
	}, nil)
	return err
}

// startKwok runs kwok for nodes annotated kwok.x-k8s.io/node=fake, with the
// Stage documents shipped in the kwok module (read from the module cache).
func (c *Cluster) startKwok() error {
	stageDir := filepath.Join(c.bins.KwokModuleDir, "kustomize", "stage")
	var docs []string
	for _, rel := range []string{
		"node/fast/node-initialize.yaml",
		"node/heartbeat/node-heartbeat.yaml",
		"pod/fast/pod-ready.yaml",
		"pod/fast/pod-complete.yaml",
		"pod/fast/pod-delete.yaml",
	} {
		b, err := os.ReadFile(filepath.Join(stageDir, rel))
		if err != nil {
			return fmt.Errorf("reading kwok stage from the module cache: %w", err)
		}
		docs = append(docs, strings.TrimSpace(string(b)))
	}
	cfg := filepath.Join(c.dir, "kwok-stages.yaml")
	if err := os.WriteFile(cfg, []byte(strings.Join(docs, "\n---\n")+"\n"), 0o644); err != nil {
		return err
	}
	_, err := c.StartProcess("kwok", c.bins.Kwok, []string{
		"--kubeconfig=" + c.KubeconfigPath(),
		"-c=" + cfg,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + KwokAnnotation + "=fake",
		"--server-address=127.0.0.1:" + itoa(c.ports.kwok),
		"--node-ip=127.0.0.1",
		"--cidr=10.244.0.0/16",
	}, nil)
	return err
}

// KwokAnnotation marks nodes that kwok manages.
const KwokAnnotation = "kwok.x-k8s.io/node"

func (c *Cluster) waitDefaultServiceAccount(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return Poll(wctx, 300*time.Millisecond, "the default ServiceAccount", func(ctx context.Context) (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
}
