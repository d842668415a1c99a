package control

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// Default page size of ListSessions.
const defaultPageSize = 100

// answerMargin bounds how long before the call's deadline Drain and
// Disconnect give up (a tenth of the time left, at most this), leaving
// their answer time to reach the caller.
const answerMargin = 500 * time.Millisecond

// withAnswerMargin ends ctx a little ahead of the caller's deadline, so
// that how far a call got reaches the caller rather than its own
// DEADLINE_EXCEEDED.
func withAnswerMargin(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, dl.Add(-min(time.Until(dl)/10, answerMargin)))
}

// Service implements tlsgate.v1.ControlService over a running gateway.
type Service struct {
	tlsgatev1.UnimplementedControlServiceServer
	gw         *server.Server
	hub        *Hub
	maxPayload int
}

// NewService returns the control service of gw, whose Handler and OnEvent
// must be hub's.
func NewService(gw *server.Server, hub *Hub) *Service {
	return &Service{gw: gw, hub: hub, maxPayload: gw.Config().MaxPayload}
}

func (s *Service) session(id uint64) (*server.Session, error) {
	sess, ok := s.gw.Session(id)
	if !ok {
		return nil, notFound(id)
	}
	return sess, nil
}

// SendAsync queues one Data packet and returns at once.
func (s *Service) SendAsync(_ context.Context, req *tlsgatev1.SendAsyncRequest) (*tlsgatev1.SendAsyncResponse, error) {
	sess, err := s.session(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	q, err := sess.SendAsync(encodingFromProto(req.GetEncoding()), req.GetPayload())
	if err != nil {
		return nil, statusFor(sess.ID(), err)
	}
	return &tlsgatev1.SendAsyncResponse{Seq: q.Seq, QueueLength: uint32(q.Depth)}, nil
}

// Drain waits until what was queued before the call is flushed (and, with
// ack, acknowledged), for one session or all of them in parallel.
func (s *Service) Drain(ctx context.Context, req *tlsgatev1.DrainRequest) (*tlsgatev1.DrainResponse, error) {
	start := time.Now()
	ctx, cancel := withAnswerMargin(ctx)
	defer cancel()
	var sessions []*server.Session
	id, one := req.GetTarget().(*tlsgatev1.DrainRequest_SessionId)
	if one {
		sess, err := s.session(id.SessionId)
		if err != nil {
			return nil, err
		}
		sessions = []*server.Session{sess}
	} else {
		sessions = s.gw.Sessions()
	}
	resp := &tlsgatev1.DrainResponse{Sessions: make([]*tlsgatev1.SessionDrain, len(sessions))}
	errs := make([]error, len(sessions))
	var wg sync.WaitGroup
	for i, sess := range sessions {
		wg.Go(func() {
			res, err := sess.Drain(ctx, req.GetAck())
			d := &tlsgatev1.SessionDrain{SessionId: sess.ID(), FlushedSeq: res.Seq, TargetSeq: res.Target, Acknowledged: res.Acked}
			if err != nil {
				d.Error = err.Error()
			}
			resp.Sessions[i], errs[i] = d, err
		})
	}
	wg.Wait()
	resp.Elapsed = durationpb.New(time.Since(start))
	if err := ctx.Err(); err != nil {
		return nil, drainInterrupted(err, resp)
	}
	if one && errs[0] != nil {
		return nil, statusFor(sessions[0].ID(), errs[0])
	}
	return resp, nil
}

// drainInterrupted is the DEADLINE_EXCEEDED (or CANCELLED) status of a
// drain, saying how far it got, with the partial response as a detail.
func drainInterrupted(err error, resp *tlsgatev1.DrainResponse) error {
	var b strings.Builder
	fmt.Fprintf(&b, "drain interrupted after %s:", resp.GetElapsed().AsDuration().Round(time.Millisecond))
	for _, d := range resp.GetSessions() {
		if d.GetError() == "" {
			continue
		}
		fmt.Fprintf(&b, " session %d flushed through seq %d of %d", d.GetSessionId(), d.GetFlushedSeq(), d.GetTargetSeq())
		if d.GetFlushedSeq() >= d.GetTargetSeq() {
			b.WriteString(" (not acknowledged)")
		}
		b.WriteString(";")
	}
	st := status.FromContextError(err)
	st = status.New(st.Code(), strings.TrimSuffix(b.String(), ";"))
	if detailed, derr := st.WithDetails(resp); derr == nil {
		st = detailed
	}
	return st.Err()
}

// Disconnect closes a session and returns its final state.
func (s *Service) Disconnect(ctx context.Context, req *tlsgatev1.DisconnectRequest) (*tlsgatev1.DisconnectResponse, error) {
	start := time.Now()
	// At the deadline the close is forced; answer with the final state.
	ctx, cancel := withAnswerMargin(ctx)
	defer cancel()
	sess, err := s.session(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	o := server.CloseOptions{Code: req.GetCode(), Reason: req.GetReason(), Force: req.GetForce()}
	if req.Reconnect != nil {
		o.Reconnect = req.Reconnect
	}
	if o.Code == "" {
		o.Code = wire.GoodbyeAdmin
	}
	if d := req.GetDrainTimeout(); d != nil {
		o.DrainTimeout = d.AsDuration()
	}
	info, err := sess.Close(ctx, o)
	if err != nil {
		return nil, statusFor(sess.ID(), err)
	}
	resp := &tlsgatev1.DisconnectResponse{Elapsed: durationpb.New(time.Since(start))}
	if info.Ended != nil {
		resp.Ended = endedToProto(sess.ID(), *info.Ended)
	} else {
		resp.Connection = closedConnection(info)
	}
	return resp, nil
}

// GetSession returns one session's state.
func (s *Service) GetSession(_ context.Context, req *tlsgatev1.GetSessionRequest) (*tlsgatev1.GetSessionResponse, error) {
	sess, err := s.session(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	return &tlsgatev1.GetSessionResponse{Session: sessionToProto(sess.Info())}, nil
}

// ListSessions returns a page of sessions ordered by ID. The page token is
// the last ID of the previous page, so pages stay stable while sessions
// come and go, and the last page is known without an empty extra page.
func (s *Service) ListSessions(_ context.Context, req *tlsgatev1.ListSessionsRequest) (*tlsgatev1.ListSessionsResponse, error) {
	after, _ := decodePageToken(req.GetPageToken()) // validated already
	size := int(req.GetPageSize())
	if size == 0 {
		size = defaultPageSize
	}
	resp := &tlsgatev1.ListSessionsResponse{}
	for _, sess := range s.gw.Sessions() {
		if sess.ID() <= after {
			continue
		}
		info := sess.Info()
		if len(req.GetStates()) > 0 && !slices.Contains(req.GetStates(), stateToProto(info.State)) {
			continue
		}
		if !strings.HasPrefix(info.RemoteAddr, req.GetRemoteAddressPrefix()) {
			continue
		}
		if len(resp.Sessions) == size {
			resp.NextPageToken = encodePageToken(resp.Sessions[size-1].GetSessionId())
			break
		}
		resp.Sessions = append(resp.Sessions, sessionToProto(info))
	}
	return resp, nil
}

func encodePageToken(lastID uint64) string {
	return base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64([]byte("v1"), lastID))
}

func decodePageToken(tok string) (uint64, error) {
	if tok == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != 10 || string(b[:2]) != "v1" {
		return 0, errors.New("not a token this server issued")
	}
	return binary.BigEndian.Uint64(b[2:]), nil
}

// WatchSessions streams lifecycle events, optionally after a snapshot.
func (s *Service) WatchSessions(req *tlsgatev1.WatchSessionsRequest, ss tlsgatev1.ControlService_WatchSessionsServer) error {
	var first []*tlsgatev1.WatchSessionsResponse
	var snapshot func(*stream[*tlsgatev1.WatchSessionsResponse])
	if req.GetIncludeSnapshot() {
		snapshot = func(*stream[*tlsgatev1.WatchSessionsResponse]) {
			now := timestampNow()
			for _, sess := range s.gw.Sessions() {
				first = append(first, &tlsgatev1.WatchSessionsResponse{Time: now, Event: &tlsgatev1.WatchSessionsResponse_Snapshot{Snapshot: sessionToProto(sess.Info())}})
			}
			first = append(first, &tlsgatev1.WatchSessionsResponse{Time: now, Event: &tlsgatev1.WatchSessionsResponse_SnapshotComplete{SnapshotComplete: &tlsgatev1.SnapshotComplete{}}})
		}
	}
	w, unsubscribe := s.hub.subscribeWatcher(snapshot)
	if err := ss.SendHeader(nil); err != nil { // subscribed: see Receive
		unsubscribe()
		return err
	}
	return pump(ss.Context(), w, first, ss.Send, unsubscribe)
}

// Receive streams inbound packets of the selected sessions.
func (s *Service) Receive(req *tlsgatev1.ReceiveRequest, ss tlsgatev1.ControlService_ReceiveServer) error {
	r, unsubscribe := s.hub.subscribeReceiver(req.GetSessionIds())
	// The response headers tell the client that the stream is subscribed:
	// every packet read from then on reaches it. Without them a client
	// cannot know when its stream starts to take packets from the handler.
	if err := ss.SendHeader(nil); err != nil {
		unsubscribe()
		return err
	}
	// unsubscribe runs once the sender has stopped, so that the item it
	// was sending when the stream ended counts as unsent, not lost.
	return pump(ss.Context(), r, nil, func(it *receiveItem) error {
		if err := ss.Send(it.resp); err != nil {
			return err
		}
		if r.ending.Load() { // maybe dropped: hand it back (at worst, a duplicate)
			return errStreamEnding
		}
		it.sent.Store(true)
		return nil
	}, unsubscribe)
}

// errHubClosed ends a stream's sender after the hub shut down.
var errHubClosed = errors.New("hub closed")

// errStreamEnding ends a stream's sender whose last send completed after
// the stream's handler began to return.
var errStreamEnding = errors.New("stream ending")

// pump sends first, then the stream's items, until the client goes away,
// the stream falls behind (RESOURCE_EXHAUSTED) or the hub shuts down
// (UNAVAILABLE, after what is buffered). The sending runs in its own
// goroutine so that a client that stops reading, which blocks Send on
// flow control, cannot keep the stream from being cut off: once the
// handler returns, gRPC ends the stream and the blocked Send fails.
func pump[T any](ctx context.Context, st *stream[T], first []T, send func(T) error, unsubscribe func()) error {
	quit := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		defer unsubscribe() // once nothing more is being sent; the handler may have returned already
		sent <- sendLoop(st, first, send, quit)
	}()
	select {
	case err := <-sent:
		if errors.Is(err, errHubClosed) {
			return status.Error(codes.Unavailable, "server shutting down")
		}
		return err
	case <-st.cut:
		st.ending.Store(true)
		close(quit)
		return withInfo(codes.ResourceExhausted, fmt.Sprintf("stream fell behind: its buffer (%d items or %d bytes) was full", cap(st.items), st.maxBytes),
			ReasonStreamFellBehind, "buffer_items", strconv.Itoa(cap(st.items)), "buffer_bytes", strconv.FormatInt(st.maxBytes, 10))
	case <-ctx.Done():
		st.ending.Store(true)
		close(quit)
		return status.FromContextError(ctx.Err()).Err()
	}
}

func sendLoop[T any](st *stream[T], first []T, send func(T) error, quit <-chan struct{}) error {
	for _, item := range first {
		if err := send(item); err != nil {
			return err
		}
	}
	for {
		select {
		case item := <-st.items:
			if err := st.send(item, send); err != nil {
				return err
			}
		case <-st.ended:
			for {
				select {
				case item := <-st.items:
					if err := st.send(item, send); err != nil {
						return err
					}
				default:
					return errHubClosed
				}
			}
		case <-quit:
			return nil
		}
	}
}
