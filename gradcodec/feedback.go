package gradcodec

import "sync"

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

// Apply adds the residual kept for key to x in place. A key with no residual,
// or with one of a different length (the stream changed shape), leaves x as
// it is; the stale residual is dropped.
func (e *ErrorFeedback) Apply(key string, x []float32) {
	e.mu.Lock()
	r, ok := e.res[key]
	if ok && len(r) != len(x) {
		delete(e.res, key)
		ok = false
	}
	e.mu.Unlock()
	if !ok {
		return
	}
	for i, v := range r {
		x[i] += v
	}
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
	for i := range x {
		r[i] = x[i] - decoded[i]
	}
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
