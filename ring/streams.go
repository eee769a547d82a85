package ring

import "strings"

// StreamReleaser is an optional interface of a Codec that keeps state per
// stream (error-feedback residuals, rate control, encoder contexts).
// ReleaseStream frees the state of every codec stream the ring derives from
// Options.Stream == stream (AllReduce's and ReduceScatter's alike) and
// returns how many entries it freed; the next collective of that stream
// starts afresh. It must not run concurrently with Encode.
type StreamReleaser interface {
	ReleaseStream(stream string) int
}

var _ StreamReleaser = (*GradCodec)(nil)

// StreamBase returns the Options.Stream a codec stream name was derived
// from: name is "<Stream>/<phase>/c<chunk>.s<sub>@<off>+<n>", with
// "/scatter" after <Stream> for ReduceScatter (see doc.go). A name of
// another form is returned unchanged.
func StreamBase(name string) string {
	i := strings.LastIndexByte(name, '/')
	if i < 0 || !strings.HasPrefix(name[i+1:], "c") {
		return name
	}
	j := strings.LastIndexByte(name[:i], '/')
	if j < 0 {
		return name
	}
	if phase := name[j+1 : i]; phase != "rs" && phase != "ag" {
		return name
	}
	base := name[:j]
	return strings.TrimSuffix(base, "/scatter")
}

// ReleaseStream implements StreamReleaser: it closes the encoders and drops
// the error-feedback residuals of stream's codec streams.
func (c *GradCodec) ReleaseStream(stream string) int {
	c.encMu.Lock()
	defer c.encMu.Unlock()
	ours := func(name string) bool { return StreamBase(name) == stream }
	n := 0
	kept := c.encoders[:0]
	for _, se := range c.encoders {
		if ours(se.key.family) {
			_ = se.enc.Close()
			n++
			continue
		}
		kept = append(kept, se)
	}
	clear(c.encoders[len(kept):])
	c.encoders = kept
	if c.ef != nil {
		n += c.ef.ResetMatching(ours)
	}
	return n
}

// StreamState returns how many encoders and error-feedback residuals the
// codec holds (for tests and metrics).
func (c *GradCodec) StreamState() (encoders, residuals int) {
	c.encMu.Lock()
	defer c.encMu.Unlock()
	if c.ef != nil {
		residuals = c.ef.Len()
	}
	return len(c.encoders), residuals
}
