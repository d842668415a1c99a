// Package backend helps services that use tlsgate's control plane as their
// data path: a Sender that batches sends onto a SendStream, and Consume,
// which runs an acknowledged Consume stream, acking each packet after a
// callback returns. Both reconnect when their stream ends.
package backend

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// SenderOptions configure a Sender. The zero value of a field means its
// default.
type SenderOptions struct {
	// Linger is how long a batch waits for more items after its first,
	// when the stream is idle. Default 50 µs.
	Linger time.Duration
	// MaxItems caps a batch: at most 10,000. Default 1,024.
	MaxItems int
	// MaxBytes caps a batch's payload bytes; a single larger item goes
	// alone. Default 1 MiB (gRPC's default message limit is 4 MiB).
	MaxBytes int
	// InFlight is how many batches may await their answer. Default 4.
	InFlight int
	// Wait sends with FULL_QUEUE_POLICY_WAIT: a full session queue slows
	// the stream down instead of failing the item.
	Wait bool
	// Logger, if set, logs reconnects.
	Logger *slog.Logger
}

// Result is what became of one item: queued (Err nil) with its seq, or
// not, with a gRPC status error (status.Code tells which).
type Result struct {
	Seq         uint64
	QueueLength uint32
	Err         error
}

// ErrSenderClosed is the Result error of items sent after Close.
var ErrSenderClosed = errors.New("backend: sender closed")

// item is one send and what to do with its result.
type item struct {
	req  *tlsgatev1.SendItem
	done func(Result)
}

// batch is one SendStream request's items.
type batch []item

func (b batch) fail(err error) {
	for _, it := range b {
		it.done(Result{Err: err})
	}
}

// A Sender sends Data packets to sessions through one SendStream at a
// time, in batches: items are queued on the stream in the order of the
// SendAsync calls, so one goroutine's items for a session keep their
// order. When the stream ends, the items awaiting an answer fail with
// UNAVAILABLE (they may or may not have been queued) and the next batch
// opens a new stream.
type Sender struct {
	api  tlsgatev1.ControlServiceClient
	o    SenderOptions
	log  *slog.Logger
	in   chan item
	stop chan struct{} // closed by Close
	kill chan struct{} // closed when Close gives up waiting
	done chan struct{} // closed when run has ended

	closeOnce, killOnce sync.Once
}

// NewSender starts a Sender over api. Close it to end its stream.
func NewSender(api tlsgatev1.ControlServiceClient, o SenderOptions) *Sender {
	o.Linger = cmp.Or(o.Linger, 50*time.Microsecond)
	o.MaxItems = min(cmp.Or(o.MaxItems, 1024), 10000)
	o.MaxBytes = cmp.Or(o.MaxBytes, 1<<20)
	o.InFlight = cmp.Or(o.InFlight, 4)
	s := &Sender{
		api: api, o: o, log: cmp.Or(o.Logger, slog.New(slog.DiscardHandler)),
		in: make(chan item, o.MaxItems), stop: make(chan struct{}), kill: make(chan struct{}), done: make(chan struct{}),
	}
	go s.run()
	return s
}

// SendAsync queues one packet and calls done with its result, from the
// Sender's goroutine (done must not block). It blocks while the Sender's
// buffer is full, until ctx ends (then done gets ctx's error).
func (s *Sender) SendAsync(ctx context.Context, sessionID uint64, enc tlsgatev1.Encoding, payload []byte, done func(Result)) {
	it := item{req: &tlsgatev1.SendItem{SessionId: sessionID, Payload: payload, Encoding: enc}, done: done}
	select {
	case <-s.stop:
		done(Result{Err: ErrSenderClosed})
		return
	default:
	}
	select {
	case s.in <- it:
	case <-s.stop:
		done(Result{Err: ErrSenderClosed})
	case <-ctx.Done():
		done(Result{Err: ctx.Err()})
	}
}

// Send queues one packet and waits for its result.
func (s *Sender) Send(ctx context.Context, sessionID uint64, enc tlsgatev1.Encoding, payload []byte) Result {
	ch := make(chan Result, 1)
	s.SendAsync(ctx, sessionID, enc, payload, func(r Result) { ch <- r })
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		return Result{Err: ctx.Err()}
	}
}

// Close sends what is queued, waits for the answers and ends the stream.
// When ctx ends first, it ends the stream at once: the items still
// awaiting an answer fail with UNAVAILABLE.
func (s *Sender) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.stop) })
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.killOnce.Do(func() { close(s.kill) })
		<-s.done
		return ctx.Err()
	}
}

// run batches items and sends them on the current stream, opening one
// when there is none.
func (s *Sender) run() {
	defer close(s.done)
	var st *senderStream
	defer func() {
		if st != nil {
			st.close(s.kill)
		}
	}()
	for {
		b, ok := s.next()
		if !ok {
			return
		}
		if st == nil || st.broken() {
			select {
			case <-s.kill:
				b.fail(ErrSenderClosed)
				continue
			default:
			}
			if st != nil {
				st.close(s.kill)
			}
			var err error
			if st, err = s.open(); err != nil {
				s.log.Warn("SendStream: cannot open the stream", "err", err)
				b.fail(err)
				st = nil
				continue
			}
		}
		st.send(b)
	}
}

// next collects the next batch: it waits for a first item, then takes
// what comes within the linger, up to the caps. It reports false once the
// Sender is closed and drained.
func (s *Sender) next() (batch, bool) {
	var first item
	select {
	case first = <-s.in:
	case <-s.stop:
		select {
		case first = <-s.in:
		default:
			return nil, false
		}
	}
	b := batch{first}
	bytes := len(first.req.GetPayload())
	linger := time.NewTimer(s.o.Linger)
	defer linger.Stop()
	for len(b) < s.o.MaxItems && bytes < s.o.MaxBytes {
		select {
		case it := <-s.in:
			b = append(b, it)
			bytes += len(it.req.GetPayload())
			continue
		default:
		}
		select {
		case it := <-s.in:
			b = append(b, it)
			bytes += len(it.req.GetPayload())
		case <-linger.C:
			return b, true
		case <-s.stop:
			return b, true
		}
	}
	return b, true
}

// senderStream is one SendStream and the batches awaiting its answers.
type senderStream struct {
	st     tlsgatev1.ControlService_SendStreamClient
	cancel context.CancelFunc
	policy tlsgatev1.FullQueuePolicy
	slots  chan struct{} // one per batch awaiting its answer: InFlight
	dead   chan struct{} // closed when the stream has ended
	ended  chan struct{} // closed when receive has returned

	mu      sync.Mutex
	pending []batch // sent, awaiting answers, in order
	over    bool    // the stream has ended: nothing more is pending
	err     error   // why
}

func (s *Sender) open() (*senderStream, error) {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := s.api.SendStream(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	policy := tlsgatev1.FullQueuePolicy_FULL_QUEUE_POLICY_REJECT
	if s.o.Wait {
		policy = tlsgatev1.FullQueuePolicy_FULL_QUEUE_POLICY_WAIT
	}
	ss := &senderStream{
		st: st, cancel: cancel, policy: policy,
		slots: make(chan struct{}, s.o.InFlight), dead: make(chan struct{}), ended: make(chan struct{}),
	}
	go ss.receive()
	return ss, nil
}

func (ss *senderStream) broken() bool {
	select {
	case <-ss.dead:
		return true
	default:
		return false
	}
}

// send sends b, waiting while InFlight batches await their answers.
func (ss *senderStream) send(b batch) {
	select {
	case ss.slots <- struct{}{}:
	case <-ss.dead:
		b.fail(ss.unavailable())
		return
	}
	ss.mu.Lock()
	if ss.over {
		ss.mu.Unlock()
		b.fail(ss.unavailable())
		return
	}
	ss.pending = append(ss.pending, b)
	ss.mu.Unlock()
	req := &tlsgatev1.SendStreamRequest{Items: make([]*tlsgatev1.SendItem, len(b)), FullQueue: ss.policy}
	for i, it := range b {
		req.Items[i] = it.req
	}
	if err := ss.st.Send(req); err != nil {
		ss.cancel() // Recv fails too, and the receiver fails what is pending
	}
}

// receive matches answers to the pending batches, in order, until the
// stream ends; then it fails what is still pending.
func (ss *senderStream) receive() {
	defer close(ss.ended)
	for {
		resp, err := ss.st.Recv()
		if err != nil {
			ss.mu.Lock()
			ss.over, ss.err = true, err
			left := ss.pending
			ss.pending = nil
			ss.mu.Unlock()
			close(ss.dead)
			for _, b := range left {
				b.fail(ss.unavailable())
			}
			return
		}
		ss.mu.Lock()
		b := ss.pending[0]
		ss.pending = ss.pending[1:]
		ss.mu.Unlock()
		<-ss.slots
		b.answer(resp.GetResults())
	}
}

// answer gives each item its result.
func (b batch) answer(rs []*tlsgatev1.SendResult) {
	for i, it := range b {
		if i >= len(rs) {
			it.done(Result{Err: status.Error(codes.Internal, "SendStream: no result for the item")})
			continue
		}
		r := rs[i]
		res := Result{Seq: r.GetSeq(), QueueLength: r.GetQueueLength()}
		if e := r.GetError(); e != nil {
			res = Result{Err: status.Error(codes.Code(e.GetCode()), e.GetMessage())}
		}
		it.done(res)
	}
}

// unavailable is the error of an item whose answer the stream's end lost.
func (ss *senderStream) unavailable() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return status.Errorf(codes.Unavailable, "SendStream ended before the answer (the item may have been queued): %v", ss.err)
}

// close ends the stream after the pending answers, or at once when kill
// is closed.
func (ss *senderStream) close(kill <-chan struct{}) {
	_ = ss.st.CloseSend()
	select {
	case <-ss.ended:
	case <-kill:
	}
	ss.cancel()
	<-ss.ended
}
