package placementwebhook

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// KeySource returns the secret material the placement signing key is
// derived from (rules.DeriveKey). Every webhook replica must get the same
// material, and a source is called on every placement, so it should be
// cheap when nothing changed.
//
// The webhook's TLS private key is such a secret: all replicas serve with
// the same key (the self-issued chain is shared through its Secret,
// cert-manager's through the mounted Secret), nobody else holds it, and it
// rotates with the certificate. The signing key is derived from it with
// HKDF under a label of its own, so it reveals nothing about the TLS key.
type KeySource func() ([]byte, error)

// CertKeySource derives the material from the private key of the
// certificate getCert serves (certs.Manager.GetCertificate).
func CertKeySource(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) KeySource {
	var (
		mu     sync.Mutex
		last   *tls.Certificate
		secret []byte
	)
	return func() ([]byte, error) {
		c, err := getCert(nil)
		if err != nil {
			return nil, fmt.Errorf("reading the webhook serving certificate: %w", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if c != last {
			der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
			if err != nil {
				return nil, fmt.Errorf("encoding the webhook serving key: %w", err)
			}
			last, secret = c, der
		}
		return secret, nil
	}
}

// FileKeySource derives the material from a PEM private key file (tls.key
// of --webhook-cert-dir), re-read when its size or modification time
// changes, at most once per recheck.
func FileKeySource(path string, recheck time.Duration, now func() time.Time) KeySource {
	var (
		mu      sync.Mutex
		checked time.Time
		stamp   string
		secret  []byte
	)
	return func() ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		t := now()
		if secret != nil && t.Sub(checked) < recheck {
			return secret, nil
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("reading the webhook serving key: %w", err)
		}
		checked = t
		s := fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
		if secret != nil && s == stamp {
			return secret, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading the webhook serving key: %w", err)
		}
		der, err := keyDER(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		stamp, secret = s, der
		return secret, nil
	}
}

// keyDER is the PKCS #8 DER of the first private key in a PEM file, the
// same encoding CertKeySource uses.
func keyDER(pemData []byte) ([]byte, error) {
	for {
		var b *pem.Block
		b, pemData = pem.Decode(pemData)
		if b == nil {
			return nil, errors.New("no PEM private key")
		}
		if !strings.HasSuffix(b.Type, "PRIVATE KEY") {
			continue
		}
		var key any
		var err error
		switch b.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("parsing the private key: %w", err)
		}
		return x509.MarshalPKCS8PrivateKey(key)
	}
}
