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
//  3. It dials rank-1's link (an HMAC of the secret over the job id, both
//     ranks, a timestamp and a nonce goes in the upgrade request; the server
//     answers with its own HMAC) and accepts exactly one link from rank+1.
//     Data flows from the server to the client: rank r sends to rank r+1 over
//     the connection r+1 dialled (see "Links" below for why).
//     A request without the secret is refused with 401, a wrong one with 403;
//     both are logged.
//  4. While running, websocket pings with read deadlines detect a stalled or
//     cut link, a closed connection detects a killed neighbour, and memberlist
//     (probe and suspicion tuned to a fraction of PeerTimeout) detects a dead
//     rank anywhere in the ring. A rank that sees its neighbour die gossips
//     the loss to all others. From then on every pending and later Send and
//     Recv returns an error wrapping *ring.PeerLostError for the lost rank.
//  5. Close tells every member goodbye (so that the others take its
//     departure for a planned one and report it lost only after a grace
//     period of PeerTimeout/2; a leave seen before its goodbye, which comes
//     over another connection, waits up to PeerTimeout/10, at most 250 ms,
//     for it before the rank counts as dead), closes the links with a
//     websocket close handshake (whose reason names the lost rank if there
//     was one, so neighbours blame the right rank) — the handshake completes
//     once the successor has read every frame sent before it, and Close
//     waits for that up to 4/5 of PeerTimeout (frames wait in the sockets,
//     not in the receiver's memory, until its Recv asks for them: frames a
//     receiver has not read by then may be lost), leaves memberlist and
//     waits for every goroutine.
//
// Links: Send writes the frame from the caller's memory and returns once the
// socket took it (no copy, no queue); Recv returns frames in order and still
// delivers those that arrived before a failure. Each frame carries the job
// id, a per-direction sequence number, a CRC-32C of its header and the
// payload's CRC-32C (ring.Message.Sum, computed once where the bytes were
// produced), so a frame of another job, a replayed, dropped or corrupted
// frame ends Recv with an error wrapping gradcodec.ErrBadFrame; the link
// then stays failed.
//
// The data path of a link, and why it is built this way (measured with
// collective's BenchmarkAllReduce16MiB/raw, 4 ranks on loopback; before:
// 970 ms and 548 MB allocated per 16 MiB allreduce on a loaded 2-core
// machine, after: 70–150 ms and 0.3 MB):
//
//   - Masking. RFC 6455 makes a client mask every frame it sends: a pass
//     over the payload and a copy into gorilla/websocket's write buffer,
//     written 64 KiB at a time. A server's frames are not masked, and
//     gorilla writes a server's large writes straight from the caller's
//     slice (one writev of its frame header, our 72-byte header and the
//     payload). So the rank that sends data is the server: each rank dials
//     its predecessor, and the HMAC-authenticated upgrade, pings and close
//     handshake stay as they were. Taking the net.Conn over after the
//     upgrade would save gorilla's small per-message allocations too, but
//     would reimplement control frames and the close handshake; unmasked
//     server frames already remove every pass over the payload that
//     websocket added.
//
//   - Receiving. Recv says how large a payload it expects
//     (ring.LimitedLink: the ring passes the size of the sub-chunk it
//     expects next). The reader reads a frame's header; a Recv already
//     waiting takes the frame itself, otherwise a frame within the last
//     such bound may be read up to two frames ahead of Recv (so a dead
//     peer is still noticed while this rank is busy), and anything else
//     waits until Recv asks for it with its bound. A longer announced
//     payload is refused (bad frame) before anything is allocated;
//     otherwise the payload is read straight into a recycled buffer
//     (ring.Recycler) or, for RecvPlace (ring.PlacingLink), into the
//     memory the caller names for that header (the raw allgather receives
//     into the tensor: no copy). Reads ask for at most 128 KiB and each is
//     checksummed right after it, while its bytes are in the cache, so
//     the one integrity check per message costs no pass over memory. The
//     receive queue is thus two frames of at most the expected size: a
//     sender that is faster than its receiver blocks in Send (TCP flow
//     control) instead of filling memory. A RecvPlace that gives up while
//     its frame is still arriving waits for the frame (at most
//     interruptGrace, 0.5 s) and otherwise breaks the read off, giving
//     the link up, so it never returns while the link writes into the
//     caller's memory; an answer a Recv gave up on goes to the next Recv,
//     before any frame read ahead and within that Recv's bound.
//
//   - Liveness. A Send blocked on a peer that is alive but not reading (a
//     rank that entered the collective late) is not a failure: both ends
//     ping, and only a silent peer (no frame or ping for 4/5 of
//     PeerTimeout) fails the link, which then closes the connection and
//     unblocks the Send. Data writes carry no deadline of their own. Send's
//     context is honoured by breaking off the write (the connection is then
//     given up); a context.AfterFunc registered for the write does that
//     only when the context ends, so a Send hands nothing to another
//     goroutine (a watcher goroutine that every Send woke twice, before
//     and after its write, was replaced).
//
//   - Latency. Go sets TCP_NODELAY on every TCP connection, so Nagle never
//     holds a small frame back (and delayed ACKs do not stall a stream of
//     full segments); a frame up to 64 KiB is one write, a larger one two
//     (header and bulk in one writev straight from the payload, then the
//     last 16 KiB with the websocket FIN bit), with no write deadline to
//     set and no goroutine hand-off between Send and the socket. Finer
//     pipelining (four messages per ring chunk for 128 KiB-4 MiB tensors)
//     was measured slower on 4 ranks sharing 2 cores (1 MiB: 20-54 ms
//     against 5-9 ms), so a ring chunk of up to 1 MiB stays one message.
//
//   - Shared memory. Between two ranks of one host (same kernel boot id,
//     network and PID namespace) the payloads of 16 KiB and more travel
//     through a shared-memory ring instead of the loopback socket (see
//     shm.go): the receiver offers a sealed memfd in its authenticated
//     upgrade request, the sender maps it through /proc/<pid>/fd and
//     copies each payload there, and the frame on the websocket carries
//     the header and the payload's position. The receiver checks the
//     payload's checksum where it lies and hands the ring that memory
//     (the reduce-scatter adds straight from it; RecvPlace copies it into
//     the tensor), and Recycle gives it back to the sender. One copy
//     instead of the kernel's two and no socket buffers: a 16 MiB raw
//     allreduce of 4 ranks on 2 CPUs took 15-21 ms instead of 32-37 ms,
//     64 MiB 57-66 instead of 108-130 ms (alternating runs). A payload
//     that finds no room (the receiver still holds earlier ones) goes
//     over the socket, so a receiver can never stall its sender; a ring
//     of Config.SharedMemBytes (32 MiB by default; VCCL_SHM) holds a
//     64 MiB allreduce's first hop. Everything else — liveness, order,
//     the job id, checksums, close reasons — stays on the websocket, so
//     a killed or stalled peer is noticed as before; ranks in different
//     network namespaces (bench/netring.sh's shaped hosts) use the
//     socket.
//
// With WorldSize 1, Start needs no secret and opens no socket (unless
// MetricsAddr is set); Next and Prev are nil.
package worker
