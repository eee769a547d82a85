// Package collective is vccl's public API: a communicator for data-parallel
// training whose allreduce compresses every gradient chunk that crosses a ring
// hop with a video codec (H.264/HEVC through FFmpeg) or a simpler tensor codec.
//
// Typical use, one process per rank (started by vccl's launcher, which sets the
// VCCL_* environment variables):
//
//	c, err := collective.InitFromEnv(ctx)
//	if err != nil { ... }
//	defer c.Close()
//
//	// 1. Plain calls: in place, sum or average.
//	st, err := c.AllReduce(ctx, grad, collective.WithAverage(), collective.WithShape(rows, cols))
//
//	// 2. DDP-style: register gradient tensors once, mark them ready during the
//	//    backward pass, wait at the end of the step.
//	b, err := collective.NewBucketer(c, tensors, collective.BucketOptions{})
//	for step := ... {
//	    backward(func(i int) { b.MarkReady(i) })
//	    st, err := b.Wait(ctx) // gradients now hold the average over ranks
//	}
//
// # Ordering
//
// Collectives run one after another on one internal goroutine of the Comm, in
// the order they were called (like a CUDA stream). Each gets an operation
// sequence number, equal on every rank for the same call; messages of another
// operation are rejected by the ring. Every rank must therefore issue the same
// collectives in the same order. AllReduceAsync returns at once and the
// collective overlaps whatever the caller does next; the data slice must not
// be touched until the Handle's Wait returns.
//
// # Compression policy
//
// Each allreduce is made of one or two ring operations: tensors that are 1-D
// (Rows or Cols is 1 in their layout) or smaller than Config.RawBelow values
// travel raw (fp32); the others go through the configured codec, laid out in
// 2-D following their rows. The first Config.WarmupSteps allreduces of each
// stream travel raw too (the uncompressed warm-up of 1-bit Adam and PowerSGD).
// Where a ring chunk's boundary cuts fewer than RawBelow values off a
// compressed tensor, that piece goes as an int8 frame (8–9 bits/value) when
// the codec is h264, hevc or tensor, raw with the fixed-rate codecs.
// A stream is the slot a tensor occupies step after step: a Bucketer names its
// buckets itself; plain AllReduce calls name it with WithStream (by default it
// is derived from the length and layout). Error feedback keeps the
// compression residual per stream and adds it to the next step's input.
//
// # Timeouts: ranks that never enter
//
// A rank that is alive but never calls a collective (stuck in its data
// loader, or skipping a step by a bug) keeps its links answering, so the
// peer timeout never fires. Config.Timeout (VCCL_TIMEOUT; 30 minutes by
// default, like torch.distributed's Gloo backend; 0 turns it off) bounds
// that wait. Every rank's first message of a collective says it entered; a
// rank that has waited Timeout without hearing that its previous rank
// entered fails the collective with an error wrapping ErrTimeout that names
// that rank (errors.As finds a *TimeoutError with Absent set), and that
// error travels downstream along the ring, so every rank it reaches returns
// exactly the same error, within about Timeout of entering. With one absent
// rank that is every other rank. A rank that did hear from its previous
// rank waits a quarter of Timeout longer (at least the ring's abort grace,
// 2s) for that error before it gives up itself with an ErrTimeout that names
// no rank; that happens only when ranks entered far apart in time, or when
// several ranks are absent (the ranks between two absent ones each name the
// one before them). The Comm is then aborted like after any failure. The
// absent rank, when it calls the collective late, reads the same error (or,
// for a Barrier or Broadcast whose previous rank had already finished its
// part, completes it; its next collective then fails).
//
// # Cancelling a call
//
// A per-call context that is cancelled or expires ends the collective on
// this rank at once with the context's error. The other ranks cannot finish
// it without this rank: this rank passes a fatal abort to its next rank
// (which passes it on), and, since some ranks may not be reached by it, the
// Comm then drops its links, so every other rank fails within its peer
// timeout, naming this rank. Either way this Comm is aborted, like the other
// ranks' Comms: later calls fail with ErrAborted. A deadline is therefore a
// job-wide decision; to bound only the wait for late ranks use
// Config.Timeout, which ends the collective on every rank with one error.
//
// # Errors
//
// Every error is an *Error ("collective: rank R: op N: ...") wrapping the
// cause, usable with errors.Is against ErrPeerLost, ErrTimeout,
// ErrShapeMismatch, ErrNonFinite, ErrBadFrame, ErrClosed and ErrAborted, and
// with errors.As against *PeerLostError or *TimeoutError to learn the lost or
// absent rank. A collective that fails
// leaves the ring in an unknown state, so the Comm is then aborted: later
// calls fail at once with ErrAborted wrapping the first error. Close the Comm
// and Init a new one to go on.
package collective
