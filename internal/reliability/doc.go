// Package reliability holds vccl's reliability suite: tests, named
// TestReliability*, that run real jobs — separate processes (the test binary
// re-executes itself as a rank), real memberlist membership and real
// websocket links on loopback (or, as root, in network namespaces the test
// creates) — and break them on purpose:
//
//   - a rank killed at random points of an allreduce (before it, during
//     reduce-scatter, during allgather), 20 times: every survivor must
//     return an error naming the lost rank within the peer timeout, no
//     process may hang or be left behind, no goroutine may leak;
//   - a stalled peer (SIGSTOP mid-allreduce) and a cut link (the veth of a
//     rank's namespace set down mid-allreduce): the same;
//   - frames truncated, corrupted, replayed from an earlier operation, or
//     from a different job: rejected with an error, never decoded into the
//     result;
//   - ranks passing different lengths, or NaN/Inf: a clear error on every
//     rank, the same on all of them;
//   - intruders joining the memberlist cluster and opening websocket links
//     without the secret and with a wrong one: refused, and the job's
//     results unaffected;
//   - a rank that is alive but never enters an allreduce: every other rank
//     fails after the collective timeout (VCCL_TIMEOUT) with the same error
//     naming it;
//   - 1,000 consecutive mixed-size h264 allreduces: resident memory at 100
//     and at 1,000 compared (no leak of FFmpeg frames, packets or codec
//     contexts); and 1,000 with a new shape, so a new stream, at every
//     step (idle streams released, memory flat).
//
// Run it with
//
//	go test ./internal/reliability -run Reliability -v
//
// Timeouts are tuned through VCCL_PEER_TIMEOUT, which the tests set for
// their ranks; RELIABILITY.md at the module root records what was tried and
// what happened. The package has no non-test code.
package reliability
