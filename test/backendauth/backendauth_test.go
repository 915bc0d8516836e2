// Package backendauth runs the adapter's Prometheus client (promquery's
// Client over NewTransport, as the adapter builds it from its
// --prometheus-* flags) against Debian's real Prometheus serving its API
// over mutual TLS with basic authentication (--web.config.file), the way a
// secured metrics backend does. It needs no cluster.
package backendauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-dev/spillway/internal/localcluster"
	"github.com/spillway-dev/spillway/pkg/promquery"
	"github.com/spillway-dev/spillway/test/framework"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("skipping tests that start Prometheus in -short mode")
		return
	}
	os.Exit(m.Run())
}

// The password's bcrypt hash (cost 4) for Prometheus's basic_auth_users;
// Prometheus stores only hashes.
const (
	user         = "spillway"
	password     = "spillway-reader-password"
	passwordHash = "$2a$04$PDU0D5Ur8NCMr6.JRvlqYeF5YPJoCe/skZ0f2F2mL2a1/UB9O1QcW"
	job          = "prometheus-tls"
)

func TestDebianPrometheusOverMutualTLS(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("Debian's prometheus package is needed (apt-get install -y prometheus): %v", err)
	}
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	serverCA, clientCA, rogueCA := newCA(t, "server-ca"), newCA(t, "client-ca"), newCA(t, "rogue-ca")
	write(t, path("server-ca.crt"), serverCA.pem)
	write(t, path("client-ca.crt"), clientCA.pem)
	write(t, path("rogue-ca.crt"), rogueCA.pem)
	writePair(t, serverCA, "prometheus", true, path("server.crt"), path("server.key"))
	writePair(t, clientCA, "spillway-metrics-adapter", false, path("client.crt"), path("client.key"))
	writePair(t, rogueCA, "spillway-metrics-adapter", false, path("rogue.crt"), path("rogue.key"))
	write(t, path("password"), []byte(password))
	basic := func(pw string) []byte {
		return []byte("Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw)))
	}
	write(t, path("authorization"), basic(password))
	write(t, path("wrong-authorization"), basic("guess"))

	port, err := localcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// Prometheus's own API and scrape endpoint both need the client
	// certificate and the password; it scrapes itself with them.
	write(t, path("web.yml"), []byte(fmt.Sprintf(`tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: client-ca.crt
basic_auth_users:
  %s: %q
`, user, passwordHash)))
	write(t, path("prometheus.yml"), []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
- job_name: %s
  scheme: https
  tls_config: {ca_file: %s, cert_file: %s, key_file: %s}
  basic_auth: {username: %s, password_file: %s}
  static_configs:
  - targets: [%q]
`, job, path("server-ca.crt"), path("client.crt"), path("client.key"), user, path("password"), addr)))
	startPrometheus(t, bin, dir, addr)

	url := "https://" + addr
	client := func(cfg promquery.TransportConfig) *promquery.Client {
		t.Helper()
		rt, err := promquery.NewTransport(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := promquery.New(promquery.Config{
			URL: url, Timeout: 5 * time.Second, RoundTripper: rt,
			SeriesSelector:    promquery.SeriesSelector{{Label: "job", Op: promquery.MatchEqual, Value: "spillway-gpu-exporter"}},
			PodSeriesSelector: promquery.SeriesSelector{{Label: "job", Op: promquery.MatchEqual, Value: job}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Prometheus's up series of its own scrape, read as a pod's own series
	// (namespace from job, pod from instance).
	up := promquery.Query{
		Metrics:  []string{"up"},
		Scope:    promquery.ScopePods,
		Readings: map[string]promquery.Reading{"up": {NamespaceLabels: []string{"job"}, PodLabels: []string{"instance"}}},
	}
	good := promquery.TransportConfig{
		CAFile: path("server-ca.crt"), CertFile: path("client.crt"), KeyFile: path("client.key"),
		Headers: []promquery.Header{{Name: "Authorization", File: path("authorization")}},
	}
	adapter := client(good)

	// The adapter's client reads the scrape's result once there is one
	// (partial_response=false is sent with it and ignored by Prometheus).
	var res promquery.Result
	framework.Eventually(t, time.Minute, 500*time.Millisecond, "an up series over mutual TLS", func(ctx context.Context) (bool, string) {
		res, err = adapter.Samples(ctx, up)
		return err == nil && len(res.Samples) > 0, fmt.Sprintf("error %v, samples %+v", err, res.Samples)
	})
	if s := res.Samples[0]; len(res.Samples) != 1 || s.Namespace != job || s.Pod != addr || s.Value != 1 {
		t.Errorf("samples %+v, want one up=1 of job %s, instance %s (Prometheus scraped itself over mutual TLS)", res.Samples, job, addr)
	}

	// Under TLS 1.3 the client's handshake completes before the server has
	// checked the client's certificate, so what the client sees is a race
	// (the server's alert, a write into a closed connection, or HTTP/2
	// failing to start). The request must fail, and Prometheus's own log
	// must say it refused the certificate for the reason the case is about.
	tests := []struct {
		name      string
		change    func(c *promquery.TransportConfig)
		want      []string // client error: any of them
		serverLog string   // or Prometheus's log, for the refused client certificates
	}{
		{"no client certificate", func(c *promquery.TransportConfig) { c.CertFile, c.KeyFile = "", "" }, nil, "client didn't provide a certificate"},
		{"a client certificate of another CA", func(c *promquery.TransportConfig) { c.CertFile, c.KeyFile = path("rogue.crt"), path("rogue.key") }, nil,
			"failed to verify client certificate: x509: certificate signed by unknown authority"},
		{"a server CA that did not sign Prometheus's certificate", func(c *promquery.TransportConfig) { c.CAFile = path("rogue-ca.crt") }, []string{"certificate signed by unknown authority"}, ""},
		{"a wrong password", func(c *promquery.TransportConfig) { c.Headers[0].File = path("wrong-authorization") }, []string{"401"}, ""},
	}
	logPath := filepath.Join(dir, "prometheus.log")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			cfg.Headers = append([]promquery.Header(nil), good.Headers...)
			tt.change(&cfg)
			before := fileSize(t, logPath)
			_, qerr := client(cfg).Samples(context.Background(), up)
			if qerr == nil {
				t.Fatalf("the query succeeded, want it refused")
			}
			if tt.serverLog == "" {
				if !slices.ContainsFunc(tt.want, func(w string) bool { return strings.Contains(qerr.Error(), w) }) {
					t.Errorf("error = %v, want one containing any of %q", qerr, tt.want)
				}
				return
			}
			framework.Eventually(t, 10*time.Second, 100*time.Millisecond, "Prometheus to log "+tt.serverLog, func(context.Context) (bool, string) {
				b, err := os.ReadFile(logPath)
				if err != nil {
					return false, err.Error()
				}
				return int64(len(b)) > before && strings.Contains(string(b[before:]), tt.serverLog), fmt.Sprintf("client error %v; log since the request:\n%s", qerr, b[min(before, int64(len(b))):])
			})
		})
	}
}

func fileSize(t *testing.T, name string) int64 {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// startPrometheus runs Prometheus from dir until the test ends, then
// stops it (its process group, by PID).
func startPrometheus(t *testing.T, bin, dir, addr string) {
	t.Helper()
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--web.config.file="+filepath.Join(dir, "web.yml"),
		"--web.listen-address="+addr,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var exitErr error // set before done closes
	go func() { exitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("prometheus log:\n%s", b)
			}
		}
	})
	// Wait for the port; readiness itself needs the credentials, which the
	// test's first query brings.
	framework.Eventually(t, 30*time.Second, 200*time.Millisecond, "prometheus to listen on "+addr, func(context.Context) (bool, string) {
		select {
		case <-done:
			t.Fatalf("prometheus exited: %v (log in %s)", exitErr, logFile.Name())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		_ = c.Close()
		return true, ""
	})
}

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, cn string) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(t), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// writePair issues a certificate for cn (a server one for 127.0.0.1 when
// server is set) and writes it and its key.
func writePair(t *testing.T, c *ca, cn string, server bool, certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(t), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write(t, keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
}

func serialNumber(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
