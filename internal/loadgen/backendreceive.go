package loadgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// receiver is a receive job: one Receive stream of every session, counted
// until it ends.
type receiver struct {
	cc   *grpc.ClientConn
	done chan struct{} // closed when the stream has ended
	// Valid once done is closed:
	packets   uint64
	last      time.Time
	latencies []time.Duration
	end       error
}

// startReceive opens the Receive stream and returns once it is
// subscribed (its response headers arrived).
func (b *backendProc) startReceive(ctx context.Context, job backendJob) error {
	if b.recv != nil {
		return errors.New("a receive job is already running")
	}
	cc, err := dialGRPC(job.ControlAddr)
	if err != nil {
		return err
	}
	st, err := tlsgatev1.NewControlServiceClient(cc).Receive(ctx, &tlsgatev1.ReceiveRequest{})
	if err == nil {
		_, err = st.Header()
	}
	if err != nil {
		_ = cc.Close()
		return fmt.Errorf("receive: %w", err)
	}
	r := &receiver{cc: cc, done: make(chan struct{})}
	b.recv = r
	go func() {
		defer close(r.done)
		for {
			resp, err := st.Recv()
			if err != nil {
				r.end = err
				return
			}
			if p := resp.GetPacket(); p != nil {
				r.packets++
				r.last = time.Now()
				if lat, ok := stamped(p.GetPayload()); ok && len(r.latencies) < maxSamples {
					r.latencies = append(r.latencies, lat)
				}
			}
		}
	}()
	return nil
}

// endReceive waits for the stream to end (the gateway ends it as it shuts
// down, after what it buffered) and reports what it got.
func (b *backendProc) endReceive() (backendReport, error) {
	r := b.recv
	if r == nil {
		return backendReport{}, errors.New("no receive job is running")
	}
	b.recv = nil
	defer func() { _ = r.cc.Close() }()
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
		return backendReport{}, errors.New("the Receive stream did not end within a minute of the gateway's shutdown")
	}
	s := summarize(r.latencies)
	rep := backendReport{
		Delivered: r.packets, P50NS: int64(s.p50), P99NS: int64(s.p99), Samples: s.n,
		Refusal: fmt.Sprintf("%s: %s", status.Code(r.end), status.Convert(r.end).Message()),
	}
	if r.packets > 0 {
		rep.LastNS = r.last.UnixNano()
	}
	return rep, nil
}
