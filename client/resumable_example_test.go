package client_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/tlsgate/tlsgate/client"
)

// Dial in resumable mode, report reconnects, send, wait for the server to
// acknowledge, read the echo and close with the Goodbye exchange.
func ExampleDialResumable() {
	addr, fingerprint, stop := startGateway()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		log.Fatal(err)
	}
	r, err := client.DialResumable(ctx, addr, key,
		client.WithFingerprint(fingerprint),
		client.WithResumeEvents(func(ev client.ResumeEvent) {
			switch ev.Kind {
			case client.EventLost:
				log.Printf("connection lost: %v", ev.Cause)
			case client.EventGap:
				log.Printf("gap: %d packets may be duplicates, server data may be lost", ev.Duplicates)
			}
		}))
	if errors.Is(err, client.ErrResumeUnsupported) {
		log.Fatal("this gateway cannot resume sessions")
	} else if err != nil {
		log.Fatal(err)
	}
	if err := r.Send(ctx, client.Data([]byte(`"hello"`))); err != nil {
		log.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil { // the server processed it
		log.Fatal(err)
	}
	p, err := r.Recv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("received %s %s\n", p.Type, p.Payload)
	if err := r.Close(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("closed")
	// Output:
	// received data "hello"
	// closed
}
