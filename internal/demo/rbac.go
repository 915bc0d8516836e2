package demo

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spillway-dev/spillway/deploy/chart"
	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/test/framework"
)

// rbacKinds are the objects of the rendered chart that grant the components
// their permissions, and the admission policies that narrow what the
// controller may do with them and protect spillway's pod labels from
// everyone else; workloads, Services and APIServices stay out because the
// components run as local processes.
var rbacKinds = []string{
	"Namespace", "ServiceAccount",
	"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
}

// ServiceAccountKubeconfigs renders the Helm chart as the demo configures
// it (exporter backend sim), installs its ServiceAccounts, RBAC and
// admission policies, and writes, for each component, a kubeconfig that
// authenticates with a token of its own ServiceAccount. The components then
// run with exactly the permissions the chart grants, so a missing rule (or a
// policy that refuses what the controller does) fails the demo and the e2e
// test instead of a user's install.
func ServiceAccountKubeconfigs(ctx context.Context, c *localcluster.Cluster) (map[string]string, error) {
	objs, err := chart.RenderSelected(ctx, framework.ChartRelease("exporter.backend=sim"), chart.OfKinds(rbacKinds...))
	if err != nil {
		return nil, fmt.Errorf("rendering the Helm chart: %w", err)
	}
	if err := c.Apply(ctx, append([]byte(framework.SystemNamespaceYAML), objs...)); err != nil {
		return nil, err
	}
	cfg := c.RESTConfig()
	out := map[string]string{}
	for _, sa := range []string{"spillway-gpu-exporter", "spillway-metrics-adapter", "spillway-controller"} {
		tr, err := c.Client().CoreV1().ServiceAccounts(framework.SystemNamespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(24 * 3600))},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("token for ServiceAccount %s: %w", sa, err)
		}
		path := filepath.Join(c.Dir(), sa+".kubeconfig")
		kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: %q, certificate-authority-data: %s}
users:
- name: %s
  user: {token: %q}
contexts:
- name: local
  context: {cluster: local, user: %s}
current-context: local
`, cfg.Host, base64.StdEncoding.EncodeToString(cfg.CAData), sa, tr.Status.Token, sa)
		if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
			return nil, err
		}
		out[sa] = path
	}
	return out, nil
}
