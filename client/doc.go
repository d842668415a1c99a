// Package client is the Go client library of tlsgate: it dials a gateway
// over TLS, performs the protocol v1 handshake, and exchanges packets with
// lossless, ordered semantics.
//
// A Conn owns exactly two goroutines: a reader and a writer. Producers
// (Send, SendAsync, Flush, Close and the protocol's own replies) only append
// to an ordered in-memory queue; the writer drains it through a 64 KiB
// buffer and flushes when the queue is empty. The reader decodes frames
// through a 64 KiB buffer and delivers Data and Error packets to Recv (or to
// the handler set with WithHandler), in order.
//
// Closing follows the protocol's Goodbye exchange: Close refuses new sends,
// writes everything already queued, sends Goodbye, keeps delivering packets
// until the server's Goodbye, then sends close_notify and reads until EOF or
// the linger timeout. Err reports why a connection ended as a *CloseError.
//
// Keep calling Recv while closing: the receive buffer is bounded
// (WithRecvBuffer), and a reader blocked on a full buffer cannot see the
// server's Goodbye, so Close would then only end with its context.
//
// # Resumable mode
//
// DialResumable opts in to the protocol's resume extension (TLS ALPN
// wire.ALPNResume): a Resumable survives lost connections. It keeps every
// packet it sends, numbered, in a bounded resume buffer until the server
// acknowledges it, and acknowledges the server's packets once the
// application has consumed them; after a lost connection (EOF, reset, an
// I/O error, or its keepalive timing out) it reconnects with exponential
// backoff and full jitter, and the two sides resend, in order, what the
// other has not processed, dropping what they receive twice: every packet
// is processed exactly once, in order, in both directions. A server that
// cannot resume (the session expired, it restarted) starts a new epoch;
// the client then resends what was unacknowledged and reports the gap
// (EventGap, *GapError), never as success. A Goodbye from either side
// ends the session for good. Each Resumable owns one supervising
// goroutine, plus a reader and a writer per connection; producers only
// enqueue, as on a Conn. The v1 Conn is unchanged.
package client
