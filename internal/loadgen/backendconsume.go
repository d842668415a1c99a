package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/tlsgate/tlsgate/backend"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// consumers are a consume job's group members, each on its own client
// connection, as separate backend instances would be.
type consumers struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	members []*consumerTally
	conns   []*grpc.ClientConn
	errs    []error
}

// consumerTally is what one member saw. Only its stream's goroutine
// touches it until the job stops.
type consumerTally struct {
	last        map[uint64]uint64 // session → highest seq
	delivered   uint64
	redelivered uint64
	outOfOrder  uint64
	latencies   []time.Duration
}

func (m *consumerTally) handle(_ context.Context, d *tlsgatev1.Delivery) error {
	p := d.GetPacket()
	if p == nil {
		return nil // a connection's end marker
	}
	m.delivered++
	if d.GetRedelivered() {
		m.redelivered++
	}
	id, seq := p.GetSessionId(), p.GetSeq()
	switch last := m.last[id]; {
	case seq == last+1:
		m.last[id] = seq
	case seq > last+1 || !d.GetRedelivered():
		m.outOfOrder++
		m.last[id] = max(last, seq)
	}
	if lat, ok := stamped(p.GetPayload()); ok {
		m.latencies = append(m.latencies, lat)
	}
	return nil
}

// startConsumers joins Members consumers to the job's group, through
// backend.Consume (which acks each batch once handled), and returns once
// every one has joined.
func (b *backendProc) startConsumers(ctx context.Context, job backendJob) error {
	if b.cons != nil {
		return errors.New("a consume job is already running")
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &consumers{cancel: cancel}
	n := max(1, job.Members)
	joined := make(chan struct{}, n)
	c.errs = make([]error, n)
	for i := range n {
		cc, err := dialGRPC(job.ControlAddr)
		if err != nil {
			cancel()
			return err
		}
		c.conns = append(c.conns, cc)
		m := &consumerTally{last: make(map[uint64]uint64)}
		c.members = append(c.members, m)
		var once sync.Once
		opts := backend.ConsumerOptions{
			Open:   &tlsgatev1.ConsumeOpen{Group: job.Group, MaxUnackedPackets: 16384, MaxUnackedBytes: 8 << 20},
			Joined: func() { once.Do(func() { joined <- struct{}{} }) },
			Logger: b.log,
		}
		c.wg.Go(func() {
			if err := backend.Consume(ctx, tlsgatev1.NewControlServiceClient(cc), opts, m.handle); !errors.Is(err, context.Canceled) {
				c.errs[i] = err
			}
		})
	}
	b.cons = c
	wait := time.NewTimer(time.Minute)
	defer wait.Stop()
	for range n {
		select {
		case <-joined:
		case <-wait.C:
			return fmt.Errorf("%d consumers did not join group %q within a minute", n, job.Group)
		}
	}
	return nil
}

// stopConsumers ends the consume job and reports what its members saw.
func (b *backendProc) stopConsumers() (backendReport, error) {
	c := b.cons
	if c == nil {
		return backendReport{}, errors.New("no consume job is running")
	}
	b.cons = nil
	c.cancel()
	c.wg.Wait()
	for _, cc := range c.conns {
		_ = cc.Close()
	}
	var rep backendReport
	var lat []time.Duration
	for _, m := range c.members {
		rep.Delivered += m.delivered
		rep.Redelivered += m.redelivered
		rep.OutOfOrder += m.outOfOrder
		for _, seq := range m.last {
			rep.Distinct += seq
		}
		lat = append(lat, m.latencies...)
	}
	s := summarize(lat)
	rep.P50NS, rep.P99NS, rep.Samples = int64(s.p50), int64(s.p99), s.n
	return rep, errors.Join(c.errs...)
}
