package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/server"
)

// startGateway runs an echo gateway in-process on a loopback port, with a
// new self-signed certificate. It returns the address, the certificate's
// fingerprint for WithFingerprint, and a function that shuts it down.
func startGateway() (addr, fingerprint string, stop func()) {
	cert, _, _, err := devcert.Generate()
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.New(server.Config{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler:   server.Echo{},
	})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	return ln.Addr().String(), client.Fingerprint(cert.Certificate[0]), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			log.Fatal(err)
		}
		if err := <-served; !errors.Is(err, server.ErrServerClosed) {
			log.Fatal(err)
		}
	}
}

// Dial a gateway, pinning its certificate, send a Data packet, read the
// echo, and close with the Goodbye exchange.
func Example() {
	addr, fingerprint, stop := startGateway()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, key, err := ed25519.GenerateKey(nil) // the client's identity
	if err != nil {
		log.Fatal(err)
	}
	conn, err := client.Dial(ctx, addr, key, client.WithFingerprint(fingerprint))
	if err != nil {
		log.Fatal(err)
	}
	if err := conn.Send(ctx, client.Data([]byte(`"hello"`))); err != nil {
		log.Fatal(err)
	}
	p, err := conn.Recv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("received %s %s %s\n", p.Type, p.Encoding, p.Payload)

	if err := conn.Close(ctx); err != nil {
		log.Fatal(err)
	}
	var ce *client.CloseError
	if errors.As(conn.Err(), &ce) {
		fmt.Printf("closed: outcome=%s initiator=%s goodbye=%s\n", ce.Outcome, ce.Initiator, ce.Code)
	}
	// Output:
	// received data json "hello"
	// closed: outcome=clean initiator=local goodbye=normal
}

// Queue packets without waiting, then Flush: when it returns, the server
// has processed every one, so their echoes are already on their way, in
// order.
func ExampleConn_Flush() {
	addr, fingerprint, stop := startGateway()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		log.Fatal(err)
	}
	conn, err := client.Dial(ctx, addr, key, client.WithFingerprint(fingerprint))
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		if err := conn.Close(ctx); err != nil {
			log.Fatal(err)
		}
	}()

	var queued []<-chan error
	for _, word := range []string{"one", "two", "three"} {
		queued = append(queued, conn.SendAsync(client.Data(fmt.Appendf(nil, "%q", word))))
	}
	if err := conn.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	for _, done := range queued {
		if err := <-done; err != nil { // written by now
			log.Fatal(err)
		}
	}
	for range queued {
		p, err := conn.Recv(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(p.Payload))
	}
	// Output:
	// "one"
	// "two"
	// "three"
}
