// Package worker is the per-process runtime of a vccl job: it finds the other
// ranks through hashicorp/memberlist (gossip encrypted with a key derived
// from the job secret), checks that the world is complete and consistent,
// opens one authenticated websocket link to each ring neighbour, and turns a
// dead peer, a broken link or a stalled connection into an error that names
// the lost rank within Config.PeerTimeout.
//
// Usage:
//
//	cfg, err := worker.ConfigFromEnv() // or fill a Config by hand
//	w, err := worker.Start(ctx, cfg)   // blocks until the whole world is linked
//	defer w.Close()
//	r := &ring.Ring{Rank: w.Rank(), Size: w.Size(), Next: w.Next(), Prev: w.Prev()}
//
// Lifecycle of a rank:
//
//  1. Start listens for links on BindAddr:0 and starts memberlist on
//     BindAddr:BindPort with node meta carrying the rank, the world size, the
//     link address and a job id derived from the secret.
//  2. It joins the addresses in Config.Join (retrying until JoinTimeout), then
//     waits until every rank 0..WorldSize-1 is present exactly once. A
//     duplicate rank, a rank outside the world or a member that disagrees on
//     the world size ends Start with an error naming the ranks; missing ranks
//     are named when JoinTimeout expires.
//  3. It dials rank+1's link (an HMAC of the secret over the job id, both
//     ranks, a timestamp and a nonce goes in the upgrade request; the server
//     answers with its own HMAC) and accepts exactly one link from rank-1.
//     A request without the secret is refused with 401, a wrong one with 403;
//     both are logged.
//  4. While running, websocket pings with read deadlines detect a stalled or
//     cut link, a closed connection detects a killed neighbour, and memberlist
//     (probe and suspicion tuned to a fraction of PeerTimeout) detects a dead
//     rank anywhere in the ring. A rank that sees its neighbour die gossips
//     the loss to all others. From then on every pending and later Send and
//     Recv returns an error wrapping *ring.PeerLostError for the lost rank.
//  5. Close flushes queued frames, tells every member goodbye (so that the
//     others take its departure for a planned one and report it lost only
//     after a grace period of PeerTimeout/2, by which time its last frames
//     have arrived), closes the
//     links with a websocket close handshake (whose reason names the lost
//     rank if there was one, so neighbours blame the right rank), leaves
//     memberlist and waits for every goroutine.
//
// Links: Send copies the payload and returns once the frame is queued
// (at most 8 frames ahead of the socket); Recv returns frames in order and
// still delivers those that arrived before a failure. Each frame carries
// the job id, a per-direction sequence number and a CRC-32C, so a frame of
// another job, a replayed, dropped or corrupted frame ends Recv with an
// error wrapping gradcodec.ErrBadFrame; the link then stays failed.
//
// With WorldSize 1, Start needs no secret and opens no socket (unless
// MetricsAddr is set); Next and Prev are nil.
package worker
