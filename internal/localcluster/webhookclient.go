package localcluster

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
)

// WebhookClientName is the common name of the client certificate
// kube-apiserver presents to admission webhooks. A webhook that requires it
// (spillway-controller's --webhook-client-ca-file and
// --webhook-client-names) refuses admission reviews from anyone else.
const WebhookClientName = "kube-apiserver-webhook-client"

// WebhookClientCAFile is the CA that signed the API server's webhook
// client certificate, and nothing else.
func (c *Cluster) WebhookClientCAFile() string {
	return filepath.Join(c.dir, "pki", "webhook-client-ca.crt")
}

// writeWebhookClientConfig issues the API server's webhook client
// certificate from a CA of its own and writes the AdmissionConfiguration
// that makes kube-apiserver present it to every admission webhook (the
// "*" user of the WebhookAdmission kubeConfigFile), as a cluster operator
// would. It returns the kube-apiserver flag that loads it.
func writeWebhookClientConfig(pkiDir string) ([]string, error) {
	dir, err := filepath.Abs(pkiDir)
	if err != nil {
		return nil, err
	}
	ca, err := newCA("spillway-webhook-client-ca")
	if err != nil {
		return nil, err
	}
	crt, key, err := ca.issue(WebhookClientName, nil, false)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"webhook-client-ca.crt": ca.certPEM(),
		"webhook-client.crt":    crt,
		"webhook-client.key":    key,
		"webhook-kubeconfig": fmt.Appendf(nil, `apiVersion: v1
kind: Config
users:
- name: "*"
  user:
    client-certificate: %s
    client-key: %s
`, filepath.Join(dir, "webhook-client.crt"), filepath.Join(dir, "webhook-client.key")),
	}
	var plugins string
	for _, p := range []string{"MutatingAdmissionWebhook", "ValidatingAdmissionWebhook"} {
		plugins += fmt.Sprintf(`- name: %s
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: %s
`, p, filepath.Join(dir, "webhook-kubeconfig"))
	}
	files["admission-config.yaml"] = []byte("apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n" + plugins)
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	return []string{"--admission-control-config-file=" + filepath.Join(dir, "admission-config.yaml")}, nil
}

// WebhookClientCert is the client certificate kube-apiserver presents to
// admission webhooks, for a test proxy that stands in for the API server's
// side of the connection.
func (c *Cluster) WebhookClientCert() (tls.Certificate, error) {
	pki := filepath.Join(c.dir, "pki")
	return tls.LoadX509KeyPair(filepath.Join(pki, "webhook-client.crt"), filepath.Join(pki, "webhook-client.key"))
}
