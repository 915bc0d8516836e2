package app

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	certutil "k8s.io/client-go/util/cert"

	"github.com/spillway-dev/spillway/pkg/promquery"
)

func TestPrometheusClientFlags(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("prometheus.monitoring.svc", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca, cert, key := file("ca.crt", certPEM), file("tls.crt", certPEM), file("tls.key", keyPEM)
	token, orgID := file("token", []byte("secret-token\n")), file("org", []byte("team-a"))
	missing := filepath.Join(dir, "missing")
	const https = "--prometheus-url=https://thanos-query.monitoring.svc:9090"

	tests := []struct {
		name string
		args []string
		want []string // substrings of the error; none: valid
	}{
		{name: "none", args: []string{"--prometheus-url=http://prom:9090"}},
		{name: "everything", args: []string{
			https, "--prometheus-bearer-token-file=" + token, "--prometheus-ca-file=" + ca,
			"--prometheus-client-cert-file=" + cert, "--prometheus-client-key-file=" + key,
			"--prometheus-header=X-Scope-OrgID=team-a|team-b", "--prometheus-header=X-Query=a=b,c", "--prometheus-header-file=X-Api-Key=" + orgID,
		}},
		{name: "token and tenant over plain http (a mesh encrypts it)", args: []string{
			"--prometheus-url=http://mimir-gateway:8080/prometheus", "--prometheus-bearer-token-file=" + token, "--prometheus-header=X-Scope-OrgID=a",
		}},
		{name: "TLS files with an http URL", args: []string{"--prometheus-url=http://prom:9090", "--prometheus-ca-file=" + ca},
			want: []string{`--prometheus-ca-file, --prometheus-client-cert-file and --prometheus-client-key-file need an https --prometheus-url, got "http://prom:9090"`}},
		{name: "key without certificate", args: []string{https, "--prometheus-client-key-file=" + key},
			want: []string{"--prometheus-client-key-file needs --prometheus-client-cert-file"}},
		{name: "certificate without key", args: []string{https, "--prometheus-client-cert-file=" + cert},
			want: []string{"--prometheus-client-cert-file needs --prometheus-client-key-file"}},
		{name: "URL that allows partial answers", args: []string{"--prometheus-url=http://thanos:9090?partial_response=true"},
			want: []string{`--prometheus-url "http://thanos:9090?partial_response=true" sets partial_response: the adapter always sends partial_response=false`}},
		{name: "every problem at once", args: []string{
			"--prometheus-url=http://prom:9090", "--prometheus-bearer-token-file=" + missing, "--prometheus-ca-file=" + token,
			"--prometheus-header=X-Scope-OrgID", "--prometheus-header-file=X-Key", "--prometheus-header=Connection=close",
			"--prometheus-header=Authorization=Bearer x", "--prometheus-header=X A=1", "--prometheus-header-file=X-B=" + missing,
		}, want: []string{
			`--prometheus-header "X-Scope-OrgID": want Name=Value`,
			`--prometheus-header-file "X-Key": want Name=path`,
			`need an https --prometheus-url`,
			`prometheus client: header "Connection" is set by the HTTP client itself and cannot be configured`,
			`prometheus client: header "Authorization" conflicts with the bearer token file`,
			`prometheus client: header name "X A" is not a valid HTTP header name`,
			`prometheus client: header "X-B" file ` + missing + `: open`,
			`prometheus client: bearer token file ` + missing + `: open`,
			`prometheus client: CA file ` + token + `: no PEM certificate in it`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewOptions()
			if err := o.ownFlags().Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "secret-token") {
				t.Errorf("the error quotes the token: %v", err)
			}
			// Each problem is reported once.
			lines := strings.Split(err.Error(), "\n")
			slices.Sort(lines)
			if len(slices.Compact(lines)) != len(strings.Split(err.Error(), "\n")) {
				t.Errorf("a problem is reported twice:\n%v", err)
			}
		})
	}

	o := NewOptions()
	if err := o.ownFlags().Parse(tests[1].args); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	want := promquery.TransportConfig{
		BearerTokenFile: token, CAFile: ca, CertFile: cert, KeyFile: key,
		Headers: []promquery.Header{{Name: "X-Scope-OrgID", Value: "team-a|team-b"}, {Name: "X-Query", Value: "a=b,c"}, {Name: "X-Api-Key", File: orgID}},
	}
	if got := o.transport; got.BearerTokenFile != want.BearerTokenFile || got.CAFile != want.CAFile || got.CertFile != want.CertFile ||
		got.KeyFile != want.KeyFile || !slices.Equal(got.Headers, want.Headers) {
		t.Errorf("transport = %+v, want %+v", got, want)
	}
}
