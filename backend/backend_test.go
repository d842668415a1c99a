package backend_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tlsgate/tlsgate/backend"
	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/internal/gatewaytest"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
	"github.com/tlsgate/tlsgate/server/gateway"
)

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), gatewaytest.Wait)
	t.Cleanup(cancel)
	return ctx
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func rawClient(t *testing.T, g *gatewaytest.Gateway) *wiretest.Conn {
	t.Helper()
	return wiretest.Connect(t, g.Addr().String(), newKey(t), wiretest.Pin(g.CertHash), wiretest.Wait(gatewaytest.Wait))
}

func goClient(t *testing.T, g *gatewaytest.Gateway) *client.Conn {
	t.Helper()
	c, err := client.Dial(timeout(t), g.Addr().String(), newKey(t), client.WithFingerprint(client.Fingerprint(g.Server().Config().TLSConfig.Certificates[0].Certificate[0])))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// TestSenderDeliversInOrder: 3,000 packets for three sessions, sent from
// one goroutine, are queued in batches with consecutive seqs per session,
// every result arrives, and each client receives its packets in order.
func TestSenderDeliversInOrder(t *testing.T) {
	const n = 3000
	g := gatewaytest.Start(t, server.Config{})
	clients := []*wiretest.Conn{rawClient(t, g), rawClient(t, g), rawClient(t, g)}
	s := backend.NewSender(gatewaytest.API(t, g.ControlAddr().String()), backend.SenderOptions{Wait: true})

	type res struct {
		k   int
		r   backend.Result
		num int
	}
	results := make(chan res, n)
	for i := range n {
		k := i % len(clients)
		s.SendAsync(timeout(t), clients[k].ID(), tlsgatev1.Encoding_ENCODING_JSON, fmt.Append(nil, i/len(clients)), func(r backend.Result) {
			results <- res{k, r, i / len(clients)}
		})
	}
	if err := s.Close(timeout(t)); err != nil {
		t.Fatal(err)
	}
	close(results)
	seqs := make([][]uint64, len(clients))
	for r := range results {
		if r.r.Err != nil {
			t.Fatalf("packet %d of client %d: %v", r.num, r.k, r.r.Err)
		}
		seqs[r.k] = append(seqs[r.k], r.r.Seq)
	}
	for k, c := range clients {
		if len(seqs[k]) != n/len(clients) {
			t.Fatalf("client %d: %d results, want %d", k, len(seqs[k]), n/len(clients))
		}
		for i, seq := range seqs[k] {
			if seq != uint64(i+1) {
				t.Fatalf("client %d: result %d has seq %d", k, i, seq)
			}
		}
		for i := range n / len(clients) {
			if f := c.Read(t); string(f.Payload) != fmt.Sprint(i) {
				t.Fatalf("client %d: packet %d is %q", k, i, f.Payload)
			}
		}
	}
}

// TestSenderReportsEachItem: an item for no session fails alone with
// NOT_FOUND; the items around it are queued.
func TestSenderReportsEachItem(t *testing.T) {
	g := gatewaytest.Start(t, server.Config{})
	c := rawClient(t, g)
	s := backend.NewSender(gatewaytest.API(t, g.ControlAddr().String()), backend.SenderOptions{})
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	if r := s.Send(timeout(t), c.ID(), tlsgatev1.Encoding_ENCODING_JSON, []byte(`"a"`)); r.Err != nil || r.Seq != 1 {
		t.Fatalf("first: %+v", r)
	}
	if r := s.Send(timeout(t), 12345, tlsgatev1.Encoding_ENCODING_JSON, []byte(`"x"`)); status.Code(r.Err) != codes.NotFound {
		t.Fatalf("unknown session: %+v, want NOT_FOUND", r)
	}
	if r := s.Send(timeout(t), c.ID(), tlsgatev1.Encoding_ENCODING_JSON, []byte(`"b"`)); r.Err != nil || r.Seq != 2 {
		t.Fatalf("after: %+v", r)
	}
	if err := s.Close(timeout(t)); err != nil {
		t.Fatal(err)
	}
	if r := s.Send(timeout(t), c.ID(), tlsgatev1.Encoding_ENCODING_JSON, []byte(`"late"`)); !errors.Is(r.Err, backend.ErrSenderClosed) {
		t.Fatalf("after Close: %+v, want ErrSenderClosed", r)
	}
}

// consumed collects what a Consume handler saw.
type consumed struct {
	mu   sync.Mutex
	got  []*tlsgatev1.Delivery
	more chan struct{} // capacity 1: something was added
}

func (c *consumed) add(d *tlsgatev1.Delivery) {
	c.mu.Lock()
	c.got = append(c.got, d)
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
}

// waitPackets waits until n packets were handled and returns them.
func (c *consumed) waitPackets(t *testing.T, n int) []*tlsgatev1.InboundPacket {
	t.Helper()
	ctx := timeout(t)
	for {
		c.mu.Lock()
		var ps []*tlsgatev1.InboundPacket
		for _, d := range c.got {
			if p := d.GetPacket(); p != nil {
				ps = append(ps, p)
			}
		}
		c.mu.Unlock()
		if len(ps) >= n {
			return ps
		}
		select {
		case <-c.more:
		case <-ctx.Done():
			t.Fatalf("%d packets handled, want %d", len(ps), n)
		}
	}
}

// runConsume runs backend.Consume until the test ends. It returns a
// channel that gets a value each time a stream has joined its group.
func runConsume(t *testing.T, api tlsgatev1.ControlServiceClient, handle backend.Handle) <-chan struct{} {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	joined := make(chan struct{}, 16)
	o := backend.ConsumerOptions{Joined: func() { joined <- struct{}{} }}
	go func() { done <- backend.Consume(ctx, api, o, handle) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Consume returned %v", err)
		}
	})
	return joined
}

// waitJoined waits for the next join of a Consume stream.
func waitJoined(t *testing.T, joined <-chan struct{}) {
	t.Helper()
	select {
	case <-joined:
	case <-timeout(t).Done():
		t.Fatal("the Consume stream did not join its group")
	}
}

// TestConsumeAcksAfterTheHandler: the handler sees the packets in order,
// and Consume acks them after it returns: the client's Flush, answered
// once they are acked, returns, and nothing is left unacked.
func TestConsumeAcksAfterTheHandler(t *testing.T) {
	g := gatewaytest.Start(t, server.Config{})
	seen := &consumed{more: make(chan struct{}, 1)}
	joined := runConsume(t, gatewaytest.API(t, g.ControlAddr().String()), func(_ context.Context, d *tlsgatev1.Delivery) error {
		seen.add(d)
		return nil
	})
	waitJoined(t, joined)
	c := goClient(t, g)
	for i := 1; i <= 11; i++ {
		if err := c.Send(timeout(t), client.Data(fmt.Append(nil, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(timeout(t)); err != nil { // answered after the acks
		t.Fatal(err)
	}
	for i, p := range seen.waitPackets(t, 11) {
		if p.GetSeq() != uint64(i+1) || string(p.GetPayload()) != fmt.Sprint(i+1) {
			t.Fatalf("packet %d: seq %d %q", i, p.GetSeq(), p.GetPayload())
		}
	}
	if st := g.Hub().Stats(); st.UnackedPackets != 0 {
		t.Fatalf("after the Flush: %d packets unacked, want 0", st.UnackedPackets)
	}
}

// TestConsumeReopensAfterACut: when the network cuts the consumer's
// stream while its handler holds a packet, Consume reopens it through the
// same address and, with --no-consumer hold, gets what was not acked
// again, flagged redelivered, then the rest: no packet is missing and
// none comes out of order.
func TestConsumeReopensAfterACut(t *testing.T) {
	const n = 10
	// hold: while the stream is down the group has no member, and keeps
	// what it held for the reopened one (with handler, the in-process
	// handler would take it).
	g := gatewaytest.Start(t, server.Config{}, func(c *gateway.Config) { c.NoConsumer = control.NoConsumerHold })
	proxy := gatewaytest.NewProxy(t, g.ControlAddr().String())
	seen := &consumed{more: make(chan struct{}, 1)}
	holding, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	joined := runConsume(t, gatewaytest.API(t, proxy.Addr()), func(_ context.Context, d *tlsgatev1.Delivery) error {
		seen.add(d)
		if d.GetPacket().GetSeq() == 3 && !d.GetRedelivered() {
			once.Do(func() { close(holding) })
			<-release
		}
		return nil
	})
	// Join first: until a group has a member, the gateway's own handler
	// takes the packets.
	waitJoined(t, joined)
	c := goClient(t, g)
	for i := 1; i <= n; i++ {
		if err := c.Send(timeout(t), client.Data(fmt.Append(nil, i))); err != nil {
			t.Fatal(err)
		}
	}
	<-holding
	proxy.Cut()
	close(release)
	// After the reopen: everything from the first unacked packet again.
	if err := c.Flush(timeout(t)); err != nil { // answered once all 10 are acked
		t.Fatal(err)
	}
	seen.mu.Lock()
	defer seen.mu.Unlock()
	next := uint64(1) // the seq the handler must see next
	redeliveries := 0
	for _, d := range seen.got {
		p := d.GetPacket()
		if p == nil {
			continue
		}
		switch {
		case p.GetSeq() == next:
			next++
		case p.GetSeq() < next && d.GetRedelivered():
			// a redelivery: it starts again from an unacked packet
			next = p.GetSeq() + 1
			redeliveries++
		default:
			t.Fatalf("seq %d (redelivered %v) when %d was due", p.GetSeq(), d.GetRedelivered(), next)
		}
	}
	if next != n+1 || redeliveries == 0 {
		t.Fatalf("the handler got through seq %d with %d redeliveries; want %d, and at least one redelivery", next-1, redeliveries, n)
	}
}
