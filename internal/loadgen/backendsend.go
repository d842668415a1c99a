package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// sendTally counts a send job's items.
type sendTally struct {
	accepted, rejected atomic.Uint64
	mu                 sync.Mutex
	refusal            string // the first refusal
}

func (t *sendTally) results(rs []*tlsgatev1.SendResult) {
	var ok, bad uint64
	for _, r := range rs {
		if e := r.GetError(); e != nil {
			bad++
			t.refused(fmt.Sprintf("%s: %s", codes.Code(e.GetCode()), e.GetMessage()))
		} else {
			ok++
		}
	}
	t.accepted.Add(ok)
	t.rejected.Add(bad)
}

func (t *sendTally) refused(msg string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refusal == "" {
		t.refusal = msg
	}
}

// sendItems builds a request's items (aim points them). The first item's payload is its own, for the
// stamp; the others share one payload of zeros.
func sendItems(n, size int) []*tlsgatev1.SendItem {
	zeros := make([]byte, size)
	items := make([]*tlsgatev1.SendItem, n)
	for k := range items {
		items[k] = &tlsgatev1.SendItem{Payload: zeros, Encoding: tlsgatev1.Encoding_ENCODING_JSON}
	}
	items[0].Payload = make([]byte, size)
	return items
}

// aim points the items at the sessions from index first on, and stamps
// the first. It returns the next request's first index.
func aim(items []*tlsgatev1.SendItem, sessions []uint64, first int) int {
	for k, it := range items {
		it.SessionId = sessions[(first+k)%len(sessions)]
	}
	stamp(items[0].Payload)
	return (first + len(items)) % len(sessions)
}

// send runs a send job: for the job's duration, the chosen method sends
// to the sessions as fast as it is let (a full queue waits); then Drain
// with ack proves the clients read it all.
func (b *backendProc) send(ctx context.Context, job backendJob) (backendReport, error) {
	if len(job.Sessions) == 0 {
		return backendReport{}, errors.New("no sessions")
	}
	cc, err := b.conn(job.ControlAddr)
	if err != nil {
		return backendReport{}, err
	}
	api := tlsgatev1.NewControlServiceClient(cc)
	d := time.Duration(job.DurationNS)
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	var t sendTally
	start := time.Now()
	deadline := start.Add(d)
	switch job.Method {
	case "stream":
		err = sendStream(ctx, api, job, deadline, &t)
	case "batch":
		err = sendBatches(ctx, api, job, deadline, &t)
	case "async":
		err = sendAsyncCalls(ctx, api, job, deadline, &t)
	default:
		err = fmt.Errorf("unknown send method %q", job.Method)
	}
	if err == nil {
		_, err = api.Drain(ctx, &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_AllSessions{AllSessions: true}, Ack: true})
	}
	return backendReport{
		Accepted: t.accepted.Load(), Rejected: t.rejected.Load(), Refusal: t.refusal,
		ElapsedNS: int64(time.Since(start)),
	}, err
}

// sendStream sends requests of Batch items on one SendStream, with at
// most InFlight awaiting their answer.
func sendStream(ctx context.Context, api tlsgatev1.ControlServiceClient, job backendJob, deadline time.Time, t *sendTally) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := api.SendStream(ctx)
	if err != nil {
		return err
	}
	slots := make(chan struct{}, max(1, job.InFlight))
	recvd := make(chan error, 1)
	go func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				recvd <- err
				return
			}
			t.results(resp.GetResults())
			<-slots
		}
	}()
	req := &tlsgatev1.SendStreamRequest{
		Items:     sendItems(max(1, job.Batch), job.Payload),
		FullQueue: tlsgatev1.FullQueuePolicy_FULL_QUEUE_POLICY_WAIT,
	}
	next := 0
	for time.Now().Before(deadline) {
		select {
		case slots <- struct{}{}:
		case err := <-recvd:
			return fmt.Errorf("SendStream ended early: %w", err)
		}
		next = aim(req.Items, job.Sessions, next)
		if err := st.Send(req); err != nil { // marshalled before it returns
			return fmt.Errorf("SendStream: %w", err)
		}
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	if err := <-recvd; err != nil {
		return fmt.Errorf("SendStream: %w", err)
	}
	return nil
}

// sendBatches runs InFlight callers of SendBatch with Batch items each.
func sendBatches(ctx context.Context, api tlsgatev1.ControlServiceClient, job backendJob, deadline time.Time, t *sendTally) error {
	n := max(1, job.InFlight)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := &tlsgatev1.SendBatchRequest{
				Items:     sendItems(max(1, job.Batch), job.Payload),
				FullQueue: tlsgatev1.FullQueuePolicy_FULL_QUEUE_POLICY_WAIT,
			}
			next := i * len(job.Sessions) / n
			for time.Now().Before(deadline) {
				next = aim(req.Items, job.Sessions, next)
				resp, err := api.SendBatch(ctx, req)
				if err != nil {
					errs[i] = fmt.Errorf("SendBatch: %w", err)
					return
				}
				t.results(resp.GetResults())
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sendAsyncCalls runs InFlight callers of SendAsync, one packet a call; a
// full queue (RESOURCE_EXHAUSTED) is counted as a refusal and waited out
// with Drain.
func sendAsyncCalls(ctx context.Context, api tlsgatev1.ControlServiceClient, job backendJob, deadline time.Time, t *sendTally) error {
	n := max(1, job.InFlight)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := &tlsgatev1.SendAsyncRequest{Payload: make([]byte, job.Payload), Encoding: tlsgatev1.Encoding_ENCODING_JSON}
			for k := i; time.Now().Before(deadline); k += n {
				req.SessionId = job.Sessions[k%len(job.Sessions)]
				stamp(req.Payload)
				ok, err := sendAsync(ctx, api, req)
				if err != nil {
					errs[i] = fmt.Errorf("SendAsync: %w", err)
					return
				}
				if ok {
					t.accepted.Add(1)
				} else {
					t.rejected.Add(1)
					t.refused("RESOURCE_EXHAUSTED: the session's queue was full")
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
