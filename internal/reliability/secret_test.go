package reliability

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/memberlist"
)

// The link upgrade protocol as worker documents it (worker/keys.go): the
// test speaks it with a wrong secret, as an intruder would.
const (
	hkdfSalt         = "vccl job secret"
	labelGossipKey   = "vccl memberlist aes-256 key v1"
	labelLinkAuthKey = "vccl websocket link hmac key v1"
	labelJobID       = "vccl job id v1"
)

type intruderKeys struct {
	gossip, auth []byte
	job          string
}

func deriveIntruderKeys(t *testing.T, secretHex string) intruderKeys {
	t.Helper()
	secret, err := hex.DecodeString(secretHex)
	if err != nil {
		t.Fatal(err)
	}
	var k intruderKeys
	if k.gossip, err = hkdf.Key(sha256.New, secret, []byte(hkdfSalt), labelGossipKey, 32); err != nil {
		t.Fatal(err)
	}
	if k.auth, err = hkdf.Key(sha256.New, secret, []byte(hkdfSalt), labelLinkAuthKey, 32); err != nil {
		t.Fatal(err)
	}
	id, err := hkdf.Key(sha256.New, secret, []byte(hkdfSalt), labelJobID, 8)
	if err != nil {
		t.Fatal(err)
	}
	k.job = hex.EncodeToString(id)
	return k
}

// upgradeHeaders builds the headers of a link upgrade from rank from to
// rank to, authenticated with keys (the job id header may come from other
// keys).
func upgradeHeaders(keys intruderKeys, jobHex string, from, to int) http.Header {
	now := time.Now().UnixNano()
	nonce := randomHex(16)
	m := hmac.New(sha256.New, keys.auth)
	// The last field is the shared-memory offer: none.
	fmt.Fprintf(m, "vccl link %s\x00%s\x00%d\x00%d\x00%d\x00%s\x00%s", "dial", jobHex, from, to, now, nonce, "")
	h := http.Header{}
	h.Set("X-Vccl-Job", jobHex)
	h.Set("X-Vccl-From", strconv.Itoa(from))
	h.Set("X-Vccl-To", strconv.Itoa(to))
	h.Set("X-Vccl-Time", strconv.FormatInt(now, 10))
	h.Set("X-Vccl-Nonce", nonce)
	h.Set("X-Vccl-Auth", hex.EncodeToString(m.Sum(nil)))
	return h
}

// memberlistIntrude tries to join the job's memberlist at addr with key
// (nil: no encryption) and reports how many members it then sees.
func memberlistIntrude(t *testing.T, bindIP, addr string, key []byte) (joined int, members int, err error) {
	conf := memberlist.DefaultLocalConfig()
	conf.Name = "intruder-" + randomHex(4)
	conf.BindAddr = bindIP
	conf.BindPort = 0
	conf.AdvertiseAddr = bindIP
	conf.SecretKey = key
	conf.TCPTimeout = 2 * time.Second
	conf.LogOutput = io.Discard
	conf.Logger = nil
	ml, err := memberlist.Create(conf)
	if err != nil {
		t.Fatalf("intruder memberlist: %v", err)
	}
	defer ml.Shutdown()
	joined, err = ml.Join([]string{addr})
	return joined, ml.NumMembers(), err
}

// TestReliabilitySecret runs a 4-rank job doing exact (integer-valued, raw)
// allreduces without end, and meanwhile tries, against every rank: to join
// its memberlist without the secret and with a wrong one; to open its
// websocket link without credentials, with a wrong secret, with the right
// job id but a forged MAC, and to send it garbage. Every attempt must be
// refused, and the job must go on with exact, identical results on every
// rank.
func TestReliabilitySecret(t *testing.T) {
	j := startJob(t, jobSpec{
		world: 4,
		role:  "allreduce",
		env: map[string]string{
			"VCCL_CODEC": "raw",
			"RELY_STEPS": "0",
			"RELY_ROWS":  "64", "RELY_COLS": "128",
		},
		peerTimeout: 3 * time.Second,
	})
	deadline := time.Now().Add(40 * time.Second)
	for _, p := range j.procs {
		if e, ok := j.waitEvent(p, "ready", deadline); !ok || e.Ev != "ready" {
			t.Fatalf("rank %d not ready: %+v", p.rank, e)
		}
	}
	// Find each rank's memberlist port (TCP and UDP) and link listener
	// (TCP only).
	type ports struct {
		gossip int
		links  []int
	}
	rp := make([]ports, len(j.procs))
	for i, p := range j.procs {
		tcp, udp, err := listeners(p.cmd.Process.Pid)
		if err != nil {
			t.Fatalf("rank %d listeners: %v", p.rank, err)
		}
		for _, port := range tcp {
			if slices.Contains(udp, port) {
				rp[i].gossip = port
			} else {
				rp[i].links = append(rp[i].links, port)
			}
		}
		if rp[i].gossip == 0 || len(rp[i].links) == 0 {
			t.Fatalf("rank %d: cannot tell its memberlist and link ports apart: tcp %v udp %v", p.rank, tcp, udp)
		}
	}
	wrong := deriveIntruderKeys(t, randomHex(32))
	right := deriveIntruderKeys(t, j.secret)
	intruderIP := j.addr

	attempts := 0
	for i := range j.procs {
		gossip := net.JoinHostPort(j.addr, strconv.Itoa(rp[i].gossip))
		for _, c := range []struct {
			name string
			key  []byte
		}{{"no key", nil}, {"wrong key", wrong.gossip}} {
			attempts++
			joined, members, err := memberlistIntrude(t, intruderIP, gossip, c.key)
			if err == nil || joined > 0 || members > 1 {
				t.Errorf("rank %d memberlist: intruder with %s joined (joined %d, sees %d members, err %v)", i, c.name, joined, members, err)
			} else {
				t.Logf("rank %d memberlist, %s: refused (%v)", i, c.name, firstLine(err))
			}
		}
		for _, port := range rp[i].links {
			url := fmt.Sprintf("ws://%s/vccl/link", net.JoinHostPort(j.addr, strconv.Itoa(port)))
			// Each rank accepts the link its successor dials (the
			// successor receives, the websocket server sends).
			next := (i + 1) % len(j.procs)
			// worker documents 401 without the secret and 403 with a wrong
			// one; any other answer (404 included) fails the test.
			for _, c := range []struct {
				name string
				h    http.Header
				want int
			}{
				{"no secret", nil, http.StatusUnauthorized},
				{"wrong secret", upgradeHeaders(wrong, wrong.job, next, i), http.StatusForbidden},
				{"right job id, forged MAC", upgradeHeaders(wrong, right.job, next, i), http.StatusForbidden},
				// Controls that show the headers above are well formed: with
				// the right secret, a rank that is not the successor is
				// refused, and the successor's slot is already taken.
				{"right secret, wrong rank", upgradeHeaders(right, right.job, (i+2)%len(j.procs), i), http.StatusForbidden},
				{"right secret, slot taken", upgradeHeaders(right, right.job, next, i), http.StatusConflict},
			} {
				attempts++
				d := websocket.Dialer{HandshakeTimeout: 3 * time.Second}
				conn, resp, err := d.Dial(url, c.h)
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				if err == nil {
					conn.Close()
					t.Errorf("rank %d link %s: websocket with %s accepted", i, url, c.name)
					continue
				}
				if status != c.want {
					t.Errorf("rank %d link %s: %s: want status %d, got %d (%v)", i, url, c.name, c.want, status, err)
					continue
				}
				t.Logf("rank %d link port %d, %s: refused with %d", i, port, c.name, status)
			}
			// Garbage on the link port: the rank must drop it, not crash.
			attempts++
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(j.addr, strconv.Itoa(port)), 2*time.Second)
			if err == nil {
				conn.SetDeadline(time.Now().Add(3 * time.Second))
				conn.Write([]byte("VCCL\x01\x00\x00\x00 garbage that is not HTTP\r\n\r\n"))
				io.Copy(io.Discard, conn)
				conn.Close()
			}
		}
	}
	// The job must still be running and correct: see three more allreduces
	// on every rank after the attacks, then stop it.
	for _, p := range j.procs {
		seen := 0
		for seen < 3 {
			e, ok := j.next(p, time.Now().Add(20*time.Second))
			if !ok {
				t.Fatalf("rank %d stopped during the attacks (events %+v)", p.rank, p.eventsSoFar())
			}
			switch e.Ev {
			case "error", "wrong":
				t.Fatalf("rank %d: the attacks broke the job: %+v", p.rank, e)
			case "op":
				seen++
			}
		}
	}
	io.WriteString(j.procs[0].stdin, "stop\n")
	if hung := j.waitExit(time.Now().Add(30 * time.Second)); len(hung) > 0 {
		t.Fatalf("ranks %v did not stop", hung)
	}
	hashes := map[int][]string{}
	ops := 0
	for _, p := range j.procs {
		if code := p.state.ExitCode(); code != 0 {
			t.Errorf("rank %d: %s, want exit 0", p.rank, p.exitDesc())
		}
		for _, e := range p.eventsSoFar() {
			switch e.Ev {
			case "op":
				if !e.Exact {
					t.Errorf("rank %d step %d: result not exact (nmse %g)", p.rank, e.Step, e.NMSE)
				}
				hashes[e.Step] = append(hashes[e.Step], e.Hash)
				ops++
			case "error", "wrong":
				t.Errorf("rank %d: %+v", p.rank, e)
			}
		}
	}
	for s, hs := range hashes {
		if len(hs) != len(j.procs) || len(slices.Compact(slices.Clone(hs))) != 1 {
			t.Errorf("step %d: ranks disagree or a rank is missing: %v", s, hs)
		}
	}
	t.Logf("%d intrusion attempts refused; the job ran %d exact allreduces (%d per rank) meanwhile", attempts, ops, ops/len(j.procs))
}

// firstLine flattens a multi-line error (memberlist's multierror) to one line.
func firstLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
