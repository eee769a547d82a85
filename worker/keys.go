package worker

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// HKDF labels; changing one changes every derived key, so they carry a
// version.
const (
	hkdfSalt         = "vccl job secret"
	labelGossipKey   = "vccl memberlist aes-256 key v1"
	labelLinkAuthKey = "vccl websocket link hmac key v1"
	labelJobID       = "vccl job id v1"
)

// jobKeys are the values derived from a job secret.
type jobKeys struct {
	gossip []byte  // 32-byte AES-256 key for memberlist
	auth   []byte  // HMAC-SHA256 key for link upgrades
	job    [8]byte // public job id: in node meta and in every frame
}

// deriveKeys derives the per-job keys from the secret with HKDF-SHA256.
func deriveKeys(secret []byte) (jobKeys, error) {
	var k jobKeys
	var err error
	if k.gossip, err = hkdf.Key(sha256.New, secret, []byte(hkdfSalt), labelGossipKey, 32); err != nil {
		return k, fmt.Errorf("worker: derive gossip key: %w", err)
	}
	if k.auth, err = hkdf.Key(sha256.New, secret, []byte(hkdfSalt), labelLinkAuthKey, 32); err != nil {
		return k, fmt.Errorf("worker: derive link key: %w", err)
	}
	id, err := hkdf.Key(sha256.New, secret, []byte(hkdfSalt), labelJobID, len(k.job))
	if err != nil {
		return k, fmt.Errorf("worker: derive job id: %w", err)
	}
	copy(k.job[:], id)
	return k, nil
}

// jobHex is the job id as printed in node names and headers.
func (k jobKeys) jobHex() string { return hex.EncodeToString(k.job[:]) }

// Headers of the link upgrade request and response.
const (
	hdrJob   = "X-Vccl-Job"
	hdrFrom  = "X-Vccl-From"  // claimed rank of the dialer
	hdrTo    = "X-Vccl-To"    // rank the dialer wants
	hdrTime  = "X-Vccl-Time"  // unix nanoseconds at the dialer
	hdrNonce = "X-Vccl-Nonce" // 16 random bytes, hex
	hdrAuth  = "X-Vccl-Auth"  // hex HMAC-SHA256, see linkMAC
	hdrProof = "X-Vccl-Proof" // server's hex HMAC-SHA256 over the same fields
	hdrShm   = "X-Vccl-Shm"   // request: the dialer's shared-memory offer; response: "ok" when taken

	// authSkew is how far the dialer's clock may be from the listener's.
	authSkew = 5 * time.Minute
)

// linkMAC authenticates one link upgrade: role distinguishes the dialer's
// request ("dial") from the listener's answer ("accept"), so one cannot be
// replayed as the other; shm is the request's or the answer's hdrShm
// (empty when absent), so nobody on the path can make a rank open or
// refuse shared memory.
func (k jobKeys) linkMAC(role string, from, to int, unixNano int64, nonce, shm string) []byte {
	m := hmac.New(sha256.New, k.auth)
	fmt.Fprintf(m, "vccl link %s\x00%s\x00%d\x00%d\x00%d\x00%s\x00%s", role, k.jobHex(), from, to, unixNano, nonce, shm)
	return m.Sum(nil)
}

// newNonce returns 16 random bytes in hex.
func newNonce() string {
	var b [16]byte
	rand.Read(b[:]) // never returns an error (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b[:])
}

// nonceCache remembers the nonces of accepted upgrades for authSkew, so a
// captured request cannot be replayed.
type nonceCache struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// fresh records nonce and reports whether it was not seen before.
func (c *nonceCache) fresh(nonce string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = make(map[string]time.Time)
	}
	for n, t := range c.seen {
		if now.Sub(t) > 2*authSkew {
			delete(c.seen, n)
		}
	}
	if _, ok := c.seen[nonce]; ok {
		return false
	}
	c.seen[nonce] = now
	return true
}

// itoa is strconv.Itoa, short for headers.
func itoa(i int) string { return strconv.Itoa(i) }
