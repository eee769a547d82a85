package ring

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRemoteTimeoutText: on a rank other than the reporting one, the
// *TimeoutError that errors.As finds reads as the reporting rank's error,
// with its "ring: op N" once, not twice.
func TestRemoteTimeoutText(t *testing.T) {
	local := &TimeoutError{Op: 7, Absent: 2, After: 3 * time.Second, Detail: " (rank 3 got nothing of this collective from it)"}
	re := newLocalError(7, 3, local)
	tok, err := decodeToken(Message{Op: 7, Kind: KindAbort, Payload: encodeAbort(re, true)}, 4)
	if err != nil {
		t.Fatal(err)
	}
	var te *TimeoutError
	if !errors.As(tok.err, &te) || te.Absent != 2 || te.Op != 7 {
		t.Fatalf("remote error %v: no *TimeoutError for op 7 naming rank 2", tok.err)
	}
	if got, want := te.Error(), local.Error(); got != want {
		t.Errorf("remote TimeoutError reads %q, want %q", got, want)
	}
	if n := strings.Count(tok.err.Error(), "ring: op 7"); n != 2 { // RemoteError's own prefix, then the origin's text
		t.Errorf("%q: \"ring: op 7\" %d times, want 2", tok.err.Error(), n)
	}
}
