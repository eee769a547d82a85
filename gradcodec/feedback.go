package gradcodec

import (
	"sync"

	"github.com/vccl/vccl/internal/kern"
)

// ErrorFeedback keeps a residual per stream key: what the receiver did not
// get of the last input for that stream (input minus decoded). Adding it to
// the next input of the same stream makes a biased lossy codec unbiased over
// time. It is safe for concurrent use; each key should be used by one
// goroutine at a time.
type ErrorFeedback struct {
	mu  sync.Mutex
	res map[string][]float32
}

// NewErrorFeedback returns an empty ErrorFeedback.
func NewErrorFeedback() *ErrorFeedback {
	return &ErrorFeedback{res: map[string][]float32{}}
}

// residual returns the residual kept for key if it has length n; one of
// another length (the stream changed shape) is dropped.
func (e *ErrorFeedback) residual(key string, n int) ([]float32, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.res[key]
	if ok && len(r) != n {
		delete(e.res, key)
		return nil, false
	}
	return r, ok
}

// Apply adds the residual kept for key to x in place. A key with no residual,
// or with one of a different length (the stream changed shape), leaves x as
// it is; the stale residual is dropped.
func (e *ErrorFeedback) Apply(key string, x []float32) {
	r, ok := e.residual(key, len(x))
	if !ok {
		return
	}
	kern.AddTo(x, r)
}

// ApplyTo writes src plus the residual kept for key into dst (one pass; a
// plain copy when there is none, or when its length differs, dropping it).
// len(dst) must be len(src).
func (e *ErrorFeedback) ApplyTo(key string, dst, src []float32) {
	r, ok := e.residual(key, len(src))
	if !ok {
		copy(dst, src)
		return
	}
	kern.AddTo2(dst, src, r)
}

// ResidualFor returns the residual slice of key with length n, for the
// caller to overwrite entirely with the new residual (input minus decoded),
// e.g. through ResidualEncoder: the update without a pass of its own. The
// old contents are unspecified.
func (e *ErrorFeedback) ResidualFor(key string, n int) []float32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.res[key]
	if cap(r) < n {
		r = make([]float32, n)
	}
	r = r[:n]
	e.res[key] = r
	return r
}

// Carry returns the residual kept for key (n values) for an encoder to add
// to its input and overwrite with the new residual in place
// (FeedbackEncoder.EncodeFeedback); kept reports whether there was one.
// When key has none, or has one of another length (the stream changed
// shape), the residual is zeros.
func (e *ErrorFeedback) Carry(key string, n int) (r []float32, kept bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.res[key]
	if ok && len(r) == n {
		return r, true
	}
	if cap(r) < n {
		r = make([]float32, n)
	} else {
		r = r[:n]
		clear(r)
	}
	e.res[key] = r
	return r, false
}

// Update stores residual[key] = x - decoded. x and decoded must have the
// same length; if they do not, the residual for key is dropped.
func (e *ErrorFeedback) Update(key string, x, decoded []float32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(x) != len(decoded) {
		delete(e.res, key)
		return
	}
	r := e.res[key]
	if cap(r) < len(x) {
		r = make([]float32, len(x))
	}
	r = r[:len(x)]
	kern.SubTo(r, x, decoded)
	e.res[key] = r
}

// Residual returns a copy of the residual kept for key, or nil.
func (e *ErrorFeedback) Residual(key string) []float32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.res[key]
	if !ok {
		return nil
	}
	return append([]float32(nil), r...)
}

// Reset drops the residual of key, or of every key when key is "".
func (e *ErrorFeedback) Reset(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if key == "" {
		clear(e.res)
		return
	}
	delete(e.res, key)
}

// ResetMatching drops the residual of every key for which match returns
// true and returns how many it dropped (match must not call e).
func (e *ErrorFeedback) ResetMatching(match func(key string) bool) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for k := range e.res {
		if match(k) {
			delete(e.res, k)
			n++
		}
	}
	return n
}

// Len returns the number of keys that hold a residual.
func (e *ErrorFeedback) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.res)
}
