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
package client
