package backend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// ConsumerOptions configure Consume. The zero value of a field means its
// default.
type ConsumerOptions struct {
	// Open is the stream's first request: group, session filter and
	// limits (see ConsumeOpen). Default: group "default", every session,
	// the server's default limits.
	Open *tlsgatev1.ConsumeOpen
	// Backoff is the first pause before reopening a stream that ended;
	// it doubles on each failure in a row, up to 2 s. Default 50 ms.
	Backoff time.Duration
	// Joined, if set, is called each time a stream has joined its group
	// (its response headers arrived): every packet the group takes from
	// then on reaches it.
	Joined func()
	// Logger, if set, logs the streams' ends and reopenings.
	Logger *slog.Logger
}

// Handle processes one delivery: a packet, or a connection's end marker.
// When it returns nil the packet is acked; an error ends the stream
// without acking the packet or those after it, which the server then
// redelivers (to this consumer once it has reopened, or to another
// member of the group), flagged redelivered.
type Handle func(ctx context.Context, d *tlsgatev1.Delivery) error

// Consume runs a Consume stream until ctx ends, calling handle for each
// delivery in order and acking each session's packets after handle
// returns for them, one ack per session per batch. When the stream ends
// it opens a new one, after a backoff. It returns ctx's error.
func Consume(ctx context.Context, api tlsgatev1.ControlServiceClient, o ConsumerOptions, handle Handle) error {
	log := cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	first := cmp.Or(o.Backoff, 50*time.Millisecond)
	backoff := first
	for {
		delivered, err := consumeOnce(ctx, api, o, handle)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if delivered {
			backoff = first
		}
		log.Warn("Consume stream ended; reopening", "err", err, "after", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// consumeOnce runs one stream; it reports whether anything was delivered.
func consumeOnce(ctx context.Context, api tlsgatev1.ControlServiceClient, o ConsumerOptions, handle Handle) (delivered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := api.Consume(ctx)
	if err != nil {
		return false, err
	}
	open := cmp.Or(o.Open, &tlsgatev1.ConsumeOpen{})
	if err := st.Send(&tlsgatev1.ConsumeRequest{Request: &tlsgatev1.ConsumeRequest_Open{Open: open}}); err != nil {
		return false, err
	}
	if _, err := st.Header(); err != nil {
		return false, err
	}
	if o.Joined != nil {
		o.Joined()
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return delivered, err
		}
		var acks batchAcks
		for _, d := range resp.GetDeliveries() {
			delivered = true
			if err := handle(ctx, d); err != nil {
				_ = sendAcks(st, acks.list)
				return true, fmt.Errorf("handler: %w", err)
			}
			if p := d.GetPacket(); p != nil {
				acks.through(p.GetSessionId(), p.GetSeq())
			}
		}
		if err := sendAcks(st, acks.list); err != nil {
			return true, err
		}
	}
}

// batchAcks are a batch's acks, one per session.
type batchAcks struct {
	list  []*tlsgatev1.Ack
	index map[uint64]int
}

// through records that the session's packets through seq are done.
func (a *batchAcks) through(id, seq uint64) {
	if i, ok := a.index[id]; ok {
		a.list[i].ThroughSeq = seq
		return
	}
	if a.index == nil {
		a.index = make(map[uint64]int)
	}
	a.index[id] = len(a.list)
	a.list = append(a.list, &tlsgatev1.Ack{SessionId: id, ThroughSeq: seq})
}

func sendAcks(st tlsgatev1.ControlService_ConsumeClient, acks []*tlsgatev1.Ack) error {
	if len(acks) == 0 {
		return nil
	}
	err := st.Send(&tlsgatev1.ConsumeRequest{Request: &tlsgatev1.ConsumeRequest_Acks{Acks: &tlsgatev1.ConsumeAcks{Acks: acks}}})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
