// Package ring implements vccl's collectives — AllReduce, ReduceScatter,
// AllGather, Broadcast, Barrier — as ring algorithms over an interface of links, with
// every chunk that crosses a hop compressed by a Codec. It does no I/O of
// its own: the links (websockets in package worker, in-memory queues in
// package ringtest) are supplied by the caller, which makes the algorithm
// testable without sockets, including under injected faults.
//
// # Using it
//
//  1. Build a Ring{Rank, Size, Next, Prev} on every rank: Next sends to rank
//     (Rank+1)%Size, Prev receives from rank (Rank-1+Size)%Size.
//  2. Give every rank its own Codec (NewGradCodec, or a ringtest codec).
//  3. Call the same collectives in the same order on every rank, each with
//     an Op sequence number that is equal on all ranks and new for each
//     call. One collective runs at a time on a Ring.
//  4. On error, every rank gets a *RemoteError naming the rank where the
//     failure arose. After a failure that is not fatal (a bad frame, a
//     non-finite value, a length mismatch, a replayed message) the links
//     are clean and the Ring can be used again. After a fatal one
//     (ErrPeerLost, a canceled context) links may hold stale messages: tear
//     the ring down.
//
// # AllReduce
//
// The buffer of n values is cut into Size ring chunks; chunk c is reduced
// by, and ends up owned by, rank c-1 (mod Size). Cuts follow whole rows of
// the tensors of Options.Layout when a row boundary lies within an eighth
// of a chunk of the even cut, so an encoded piece keeps its tensor's 2-D
// shape; a chunk that spans several tensors hands the codec several pieces,
// and a partial row becomes a 1×k piece. Each chunk is further cut the same
// way into sub-chunks of about Options.SubChunkValues values, the unit of
// pipelining: one message per sub-chunk per hop.
//
// Reduce-scatter, steps s = 0..Size-2: rank r sends chunk r-s and receives
// chunk r-s-1, decodes it, adds its own values, and at the next step
// re-encodes that partial sum (Codec.Encode, stream
// "<Stream>/rs/c<chunk>.s<sub>@<offset>+<length>", with no recon: the
// sender keeps only its error feedback). After Size-1 steps rank
// r holds the full sum of chunk r+1. With Average it divides by Size, then
// encodes the chunk once more (stream ".../ag/...") and keeps the decoded
// values (the codec's recon), not its exact sum.
//
// Allgather, steps s = 0..Size-2: rank r sends chunk r+1-s and receives
// chunk r-s. The owner's encoded bytes are forwarded unchanged and every
// receiver decodes the same bytes, so — video decoding being bit-exact by
// standard — every rank ends with bit-identical values (invariant 1 of
// DESIGN.md). Stream names identify a slot stably across calls, so the
// codec's error feedback and rate control follow the same slot step after
// step (invariant 2).
//
// Pipelining: a sender goroutine encodes and sends, a receive pump
// goroutine reads the link, and the calling goroutine decodes and adds. A
// send that needs a received sub-chunk (every step but the first) waits for
// exactly that sub-chunk, so encoding of sub-chunk k+1 overlaps the sending
// of k and the decoding of k-1. The receive side never blocks on the send
// side, so bounded links cannot deadlock the ring.
//
// # The raw data path
//
// With a Codec that reports RawWire (GradCodec with codec "raw"), the wire
// bytes of a sub-chunk are its float32 values in little-endian order and the
// ring moves them itself instead of calling Encode and Decode. Per message
// and hop the passes over memory are:
//
//   - sender: the payload is the tensor's own memory (no copy) and its
//     Message.Sum was computed by the pass that last wrote it (below), so
//     the only pass is the socket write's copy into the kernel (or, to a
//     rank on the same host, the copy into shared memory; see below);
//   - receiver: the kernel copies the payload into a buffer the link
//     recycles (reduce-scatter) or straight into the tensor where it
//     belongs (allgather, over a PlacingLink: the ring names the memory for
//     the header it expects); the link checksums each read of at most
//     128 KiB right after it, while the bytes are in the cache;
//     reduce-scatter then adds the buffer into the tensor block by block
//     (kern.AddFinite: AVX2, the NaN/Inf check in the same pass) and
//     checksums each 8 KiB block of sums while it is in the L1 cache: that
//     is the Sum of the next hop's send. The allgather forwards the bytes
//     from the tensor with the Sum they arrived with. Every checksum is
//     kern.UpdateCRC32C (carry-less multiply folding, 40-50 GB/s on data in
//     the cache, twice hash/crc32's speed): the same CRC-32C, so the wire
//     format and its detection power are unchanged.
//
// So a reduce-scatter hop makes three passes over memory (two kernel
// copies and the fused add), an allgather hop two (the kernel copies), and
// the two checksums of a message read cache-resident data instead of making
// passes of their own. Gloo makes three or four passes per hop and computes
// no checksum. The container path this replaced made some 18-20 (a scratch
// copy, a float64 NaN scan, a per-value encode into a growing slice, a
// recon copy, a container CRC, a payload copy into the frame, a link CRC,
// websocket masking, a zeroed buffer per message, two CRC checks on
// receipt, a per-value decode and a separate add).
//
// Measured (4 processes on 2 cores, 16 MiB, perf stat over 40 allreduces,
// allreduce_perf -cpuprofile): checksumming 1 MiB sub-chunks after the
// fact ran at 8 GB/s (the data had left the caches), cache-resident at
// about 20 GB/s with hash/crc32 and 40-50 GB/s with kern.UpdateCRC32C; the
// checksums went from 23% of the profile to 4%, and the CPU time per
// allreduce of all ranks from 93-98 ms to 79-82 ms (Gloo: 64-69 ms). The
// socket syscalls (kernel copies, as for Gloo) are about half of what is
// left, scheduling (Go's sysmon, futex wake-ups: some 1,100 context
// switches per allreduce against Gloo's 300) most of the rest. Neither
// larger socket buffers (SO_RCVBUF/SO_SNDBUF 1-4 MiB), nor reads of 256 or
// 512 KiB, nor 4 MiB sub-chunks, nor GOMAXPROCS=1 per rank (a third fewer
// context switches) changed the time measurably, so none is used.
//
// Then, measured per 16 MiB allreduce of 4 processes on loopback (perf stat
// -e context-switches,task-clock over bench/netring.sh --loopback --codecs
// raw --sizes 16M, 260 against 60 iterations, so start-up cancels out; two
// runs each, interleaved with main):
//
//   - Send no longer wakes a watcher goroutine before and after every
//     write (the watcher broke off a write whose context ended); a
//     context.AfterFunc does that, only when the context ends. Context
//     switches fell from about 970 to 860 per allreduce (-11%, both pairs);
//     CPU time stayed at 73-74 ms (all ranks) and the wall time moved
//     within the noise of four interleaved runs (raw/Gloo medians main
//     1.18/1.17 and 1.10/1.10 at 16/64 MiB, with it 1.17/1.07 and
//     1.04/1.15). Kept: one goroutine fewer per link and fewer wake-ups.
//   - Writing a large frame as 256 KiB fragments (one writev each, so no
//     socket write copies more than 256 KiB, against sysmon retaking a P
//     during long writes) made it worse: about 200 more context switches
//     and 7 ms more CPU per allreduce (two 60-iteration runs against the
//     same without it), raw/Gloo medians 1.13/1.24 and 1.14/1.10. Not
//     used.
//   - Allgather frames that arrive while the pump is between two
//     RecvPlace calls were read ahead into a link buffer and copied into
//     the tensor (copyWire): 62% of the allgather payloads in
//     collective's BenchmarkAllReduce16MiB/raw. Not reading ahead after a
//     RecvPlace made every one land in place (0 copied), but changed
//     neither the context switches (865 per allreduce) nor the CPU time
//     (73 ms) measurably, nor the wall time by a clear margin, so the
//     read-ahead stays (it keeps reading while the pump is busy).
//
// What decided the loopback time in the end was placement, not the data
// path: with 4 ranks on 2 CPUs, where the kernel happened to put ring
// neighbours changed a 16 MiB allreduce from 25 to 52 ms between starts of
// the same binary. Bound as the launcher now binds ranks by default (rank
// i on the i-th share of the CPUs; ring neighbours share one), the same
// allreduce costs 20 ms of user and 46 ms of system CPU over all ranks
// and 1,160 context switches, against 28, 53 and 2,700 unbound (perf stat
// over 120 against 20 iterations of allreduce_perf -codec raw -b 16M).
// Linking same-host ranks over Unix sockets instead of TCP was measured
// too (abstract-namespace sockets behind the same authenticated upgrade):
// the kernel's time per allreduce stayed within 5% (45.6 against 47.5
// ms; the socket copies of data that has left the caches dominate, not
// TCP's protocol work), bound or not, so links stay on TCP.
//
// What did remove those copies is shared memory (package worker, between
// ranks of one host): the sender copies a payload into a ring the
// receiver maps, the receiver's reduce-scatter adds straight from that
// memory and its allgather copies from it into the tensor, so a
// reduce-scatter hop makes two passes over memory instead of three and
// the kernel's socket copies and buffers are gone. The 16 MiB allreduce
// above: 15-21 ms instead of 32-37 ms (4 ranks on 2 CPUs, alternating
// runs with VCCL_SHM=off). For it the ring hands a forwarded allgather
// payload back (Recycler) once it is sent, so every payload a link hands
// out comes back.
//
// The first send of a rank's own chunk (reduce-scatter hop 0) checks it
// for NaN/Inf and checksums it in one blocked pass; with Average the owner
// divides its chunk and checksums the quotients in one pass. NaN and Inf
// are thus checked where values enter the sum (every sum the fused add
// produces is checked, which also catches an overflow); the error names
// the rank whose values made the sum non-finite. Nothing is allocated per
// message in steady state: the link hands out recycled receive buffers
// (ring gives them back through Recycler once consumed, never memory of
// the tensor) and the sender allocates nothing. Links that carry
// Message.Sum and implement LimitedLink also refuse, from a frame's header,
// any payload larger than the sub-chunk the ring expects next (or a status
// message), before anything of that size is allocated.
//
// Receiving in place is safe because nothing else of the rank touches that
// part of the tensor by then: its last reduce-scatter send of the chunk
// left the socket before the owner could complete the sum (Send returns
// once the socket took the bytes), and the allgather forwards the chunk
// only after it arrived. Only a header that matches an allgather step of
// this collective exactly (op, total, hop and the chunk it brings, sub-chunk,
// length) gets tensor memory; one that matches but comes out of sequence
// (a peer that does not follow the protocol) still fails the collective,
// leaving the tensor unspecified as every failure does. RecvPlace does not
// return while the link writes into the tensor, and the pump returns before
// the collective does, so nothing writes into it after AllReduce returned.
//
// Every other codec keeps its own container and checks; the ring still
// computes one Message.Sum per message it produces and forwards allgather
// payloads with their Sum.
//
// # ReduceScatter
//
// ReduceScatter is the reduce-scatter phase alone, with the chunks shifted by
// one and cut exactly into Size equal slices (only sub-chunk cuts follow
// rows): rank r sends chunk r-s-1 and receives chunk r-s-2 at step s, so
// after Size-1 steps it holds the full sum of chunk r, its slice of the
// input, as torch.distributed.reduce_scatter_tensor defines it. Streams are
// "<Stream>/scatter/rs/...". A rank's own slice never passes its own codec,
// so it is checked for NaN/Inf before any data moves.
//
// # AllGather and Broadcast
//
// Byte payloads travel in pieces of at most Ring.ChunkBytes (1 MiB by
// default). A first run carries piece 0 of every payload, an 8-byte length
// then the first bytes, as before; when a payload is longer, a second run
// under the same Op carries pieces 1, 2, ... (Sub), each forwarded by the
// next rank as soon as it arrives, so the ring streams a payload of any size
// and no message exceeds ChunkBytes.
//
// # Checks
//
// Every message carries Op, Kind, Hop, Chunk, Sub and Total, and the
// receiver checks them against what it expects next: a message of another
// op (a replay of an earlier step) or out of sequence is rejected with
// ErrProtocol, never decoded into the result; a Total that differs from the
// receiver's length is an error wrapping ErrShapeMismatch that names both
// ranks' lengths. Codec errors keep their sentinels (gradcodec.ErrNonFinite
// from Encode, gradcodec.ErrBadFrame from Decode).
//
// # Ending a collective: the status round
//
// A rank may only return success once it knows that no other rank failed,
// so every collective ends with a round of status tokens. When a rank has
// received all its data and sent all of its own, it sends a KindDone token
// carrying its rank; when it fails it sends a KindAbort token instead,
// carrying its rank, an ErrorCode and the error text, and stops sending
// data; a rank that receives an abort also stops and sends a "stopped"
// done token. Each rank forwards every token it receives except to the
// token's origin, so each token travels Size-1 hops and every rank sees the
// status of every other rank. A rank returns when it has seen Size-1
// tokens: success if all were done, else the failure with the lowest origin
// rank — the same *RemoteError text on every rank. Tokens are the last
// messages of a collective on a link, so the links are clean afterwards.
// Barrier is this round alone.
//
// A lost peer or an ended context cannot complete a round. The rank that
// sees it sends a fatal abort (trying for at most Ring.AbortGrace) and
// returns; every rank that receives a fatal abort passes it on and returns
// it. Lost peers are reported as errors wrapping
// ErrPeerLost, and errors.As finds a *PeerLostError with the lost rank, on
// every rank. Everything honours the caller's context: nothing waits longer.
//
// # Ranks that never enter
//
// A rank that is alive but never calls a collective cannot be told from a
// slow one by its links (they keep answering). The first message of every
// collective a rank sends is KindEnter, so its next rank knows it entered.
// With Ring.Timeout set, a rank that has been in a collective for Timeout
// without the KindEnter of its previous rank names that rank in a fatal
// abort (a *TimeoutError, errors.Is ErrTimeout, wrapped in the
// *RemoteError) and passes it downstream; every rank that receives it
// passes it on and returns it. So with one absent rank every other rank
// returns the same error, naming it, about Timeout after entering; the
// absent rank itself reads it when it enters late (unless its previous rank
// had already finished its part, say of a Barrier). A rank that did hear
// from its previous rank waits TimeoutExtra longer for that abort and then
// gives up with a TimeoutError of its own (Absent -1, listing the ranks
// whose status it never got): this happens when ranks enter far apart in
// time, or when several ranks are absent — no rank between two absent ones
// can hear from beyond them, so each stretch of ranks names the absent rank
// before it.
//
// # Links
//
// Link.Recv and Link.Send must honour their context. Send must not keep
// Message.Payload after it returns unless the link copies it: the raw path
// sends views of the caller's tensor (the ring's order of operations never
// changes a sub-chunk before its receiver has consumed it, so links that
// queue payloads, as ringtest's do, still see the bytes that were sent). A
// link that moves messages between processes carries Message.Sum and checks
// it on arrival. A Recv that fails for
// any reason ends the collective as fatal and keeps its cause (a lost peer,
// or say gradcodec.ErrBadFrame for a frame the link itself rejected). A Send
// that fails with ErrPeerLost or a context error is fatal; any other Send
// error (a payload over the link's limit) fails the collective like a codec
// error, through the status round. Broadcast and AllGather send pieces of
// at most Ring.ChunkBytes, which must fit the link's message limit; status
// messages are small (about 1 KiB at most).
//
// The ranks must agree on Op, the length, Average, Layout and
// SubChunkValues: the op and the length are checked on every message; a
// Layout or SubChunkValues that differs shows as an out-of-sequence message or
// a codec shape error; a different Average cannot be seen and yields a wrong
// (though still identical on every rank) result.
//
// # Codecs
//
// Codec is the interface the ring compresses with. GradCodec implements it
// over package gradcodec: one Encoder per stream family, piece and shape
// (the sub-chunks of a chunk share it, each with its own rate control), a
// Decoder for Decode and a second one inside Encode to compute recon
// exactly as every receiver will, error feedback per stream, and a
// container that holds the pieces of a chunk (video frames, or, for pieces
// the RawBelow policy excludes, int8 frames or raw values). Package
// ringtest has an exact and a lossy codec that need no FFmpeg.
package ring
