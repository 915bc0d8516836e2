package placement

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
)

// Claim is what a placement signature vouches for: that spillway placed the
// pod of this namespace and placement ID with this policy and unit, and
// counted its room on Node ("" when no room was checked).
type Claim struct {
	Namespace   string
	PlacementID string
	Node        string
	Policy      string
	Unit        string
}

// ClaimOf reads the claim a pod carries in its placement labels and
// annotations. Whether spillway wrote them is for Keyring.Verify to say.
func ClaimOf(pod *corev1.Pod) Claim {
	return Claim{
		Namespace:   pod.Namespace,
		PlacementID: pod.Annotations[AnnotationPlacementID],
		Node:        pod.Annotations[AnnotationReservedNode],
		Policy:      pod.Labels[LabelPolicy],
		Unit:        pod.Labels[LabelUnit],
	}
}

// encode is the claim as HMAC input: a version tag, then each field with
// its length, so that no two claims encode alike ("a/b"+"c" vs "a"+"b/c").
func (c Claim) encode() []byte {
	var b bytes.Buffer
	b.WriteString("spillway.dev/placement-signature/v1")
	for _, f := range []string{c.Namespace, c.PlacementID, c.Node, c.Policy, c.Unit} {
		b.Write(binary.AppendUvarint(nil, uint64(len(f))))
		b.WriteString(f)
	}
	return b.Bytes()
}

// hkdfInfo separates the signing key from every other use of the secret it
// is derived from (the webhook's TLS private key).
const hkdfInfo = "spillway.dev placement signature key v1"

// DeriveKey turns secret material (the webhook serving key) into the HMAC
// key with HKDF-SHA256.
func DeriveKey(secret []byte) ([]byte, error) {
	if len(secret) == 0 {
		return nil, errors.New("no secret material to derive the placement signing key from")
	}
	return hkdf.Key(sha256.New, secret, nil, hkdfInfo, sha256.Size)
}

// Keyring signs placement claims with a key every webhook replica derives
// from the same secret, and verifies them with that key or, for Grace after
// the secret changed, with the previous one: replicas pick up a rotated
// serving key at slightly different times, and pods placed just before
// the rotation still wait to be scheduled.
type Keyring struct {
	clock clock.PassiveClock
	grace time.Duration

	mu            sync.RWMutex
	secret        []byte // the material current was derived from
	current       []byte
	previous      []byte
	previousUntil time.Time
}

// NewKeyring returns an empty keyring; Update gives it its key.
func NewKeyring(clk clock.PassiveClock, grace time.Duration) *Keyring {
	return &Keyring{clock: clk, grace: grace}
}

// Update derives the key from secret when it differs from the last one; the
// key in use until now is then kept for verification for the grace.
func (k *Keyring) Update(secret []byte) error {
	k.mu.RLock()
	same := k.current != nil && bytes.Equal(k.secret, secret)
	k.mu.RUnlock()
	if same {
		return nil
	}
	key, err := DeriveKey(secret)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.current != nil && !bytes.Equal(k.secret, secret) {
		k.previous, k.previousUntil = k.current, k.clock.Now().Add(k.grace)
	}
	k.secret, k.current = bytes.Clone(secret), key
	return nil
}

// Sign returns the signature of the claim (unpadded base64url of an
// HMAC-SHA256), or an error before the first Update.
func (k *Keyring) Sign(c Claim) (string, error) {
	k.mu.RLock()
	key := k.current
	k.mu.RUnlock()
	if key == nil {
		return "", errors.New("the placement signing key is not loaded")
	}
	return base64.RawURLEncoding.EncodeToString(mac(key, c)), nil
}

// Verify reports whether sig is the signature of the claim under the
// current key, or the previous key within its grace.
func (k *Keyring) Verify(c Claim, sig string) bool {
	if sig == "" || c.PlacementID == "" {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	k.mu.RLock()
	keys := [][]byte{k.current}
	if k.previous != nil && k.clock.Now().Before(k.previousUntil) {
		keys = append(keys, k.previous)
	}
	k.mu.RUnlock()
	for _, key := range keys {
		if key != nil && hmac.Equal(got, mac(key, c)) {
			return true
		}
	}
	return false
}

// Signed reports whether the pod's placement labels and annotations carry
// a valid signature: spillway wrote them.
func (k *Keyring) Signed(pod *corev1.Pod) bool {
	return k.Verify(ClaimOf(pod), pod.Annotations[AnnotationSignature])
}

func mac(key []byte, c Claim) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(c.encode())
	return h.Sum(nil)
}
