// Package loadgen is the load generator behind `tlsgate bench`: it drives a
// gateway (started in-process on loopback by default, or a running one)
// through scenarios, measures each figure beside a baseline measured in the
// same run, and checks that no packet was lost. See docs/performance.md.
//
// Baselines:
//   - raw: a crypto/tls loop speaking the same frame format, reading and
//     writing through 64 KiB buffers with one Write per 64 KiB (the limit);
//   - grpc: a bare grpc-go unary echo, no interceptors;
//   - raw handshakes: a TLS 1.3 handshake with the same certificate and
//     configuration, without tlsgate's Ed25519 exchange;
//   - raw idle: a raw TLS server holding the connection with the raw loop's
//     per-connection state (a goroutine and 64 KiB read and write buffers),
//     and, for reference, a bare one (a goroutine and no buffers).
package loadgen
