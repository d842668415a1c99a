package control_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestGetSession: every field of a live session.
func TestGetSession(t *testing.T) {
	const queueBytes = 1 << 20
	e := start(t, setup{gateway: server.Config{QueueBytes: queueBytes}})
	ws, _ := e.watch(t)
	before := time.Now()
	rc := e.dialRaw(t, nil)
	connected := nextEvent(t, ws, func(ev *tlsgatev1.WatchSessionsResponse) bool { return ev.GetConnected() != nil }).GetConnected().GetSession()

	// Three packets, echoed by the fallback handler, then a barrier: 4 in,
	// 4 out (3 echoes and the FlushAck).
	for i := range 3 {
		rc.WriteFrame(t, wire.TypeData, wire.JSON, fmt.Appendf(nil, "%d", i))
	}
	if echoes := flushRaw(t, rc, 1); len(echoes) != 3 {
		t.Fatalf("%d echoes, want 3", len(echoes))
	}
	// The client can read the FlushAck before the writer has counted its
	// batch (it counts once the flush returns); Drain answers after that.
	if _, err := e.api.Drain(timeout(t, wait), &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_SessionId{SessionId: rc.ID()}}); err != nil {
		t.Fatal(err)
	}
	s := e.getSession(t, rc.ID())
	cs := rc.TLS().ConnectionState()
	if s.GetSessionId() != rc.ID() || !bytes.Equal(s.GetPublicKey(), rc.PublicKey()) || s.GetConnectionId() != connected.GetConnectionId() || s.GetConnectionId() == 0 {
		t.Fatalf("identity: %v; want session %d, key %x, connection %d", s, rc.ID(), rc.PublicKey(), connected.GetConnectionId())
	}
	if s.GetRemoteAddress() != rc.TLS().LocalAddr().String() {
		t.Fatalf("remote address %q, want the client's %q", s.GetRemoteAddress(), rc.TLS().LocalAddr())
	}
	if s.GetTlsVersion() != "TLS 1.3" || s.GetTlsCipher() != tls.CipherSuiteName(cs.CipherSuite) {
		t.Fatalf("TLS %q %q, want TLS 1.3 %q", s.GetTlsVersion(), s.GetTlsCipher(), tls.CipherSuiteName(cs.CipherSuite))
	}
	if s.GetState() != tlsgatev1.SessionState_SESSION_STATE_ACTIVE {
		t.Fatalf("state %s", s.GetState())
	}
	ct, la := s.GetConnectedTime().AsTime(), s.GetLastActivityTime().AsTime()
	if ct.Before(before) || la.Before(ct) || la.After(time.Now()) || !connected.GetConnectedTime().AsTime().Equal(ct) {
		t.Fatalf("connected %s, last activity %s; dialled at %s", ct, la, before)
	}
	if c := s.GetCounters(); c.GetPacketsIn() != 4 || c.GetPacketsOut() != 4 || c.GetBytesIn() == 0 || c.GetBytesOut() == 0 ||
		c.GetDiscarded() != 0 || c.GetRepliesDropped() != 0 || c.GetUnwritten() != 0 {
		t.Fatalf("counters %v", c)
	}
	if s.GetQueueLength() != 0 || s.GetQueueBytes() != 0 || s.GetQueueLimitBytes() != queueBytes {
		t.Fatalf("queue %d packets, %d bytes, limit %d", s.GetQueueLength(), s.GetQueueBytes(), s.GetQueueLimitBytes())
	}
	if s.GetLastFlushAckSeq() != 0 || s.GetTakeovers() != 0 {
		t.Fatalf("last_flush_ack_seq %d, takeovers %d", s.GetLastFlushAckSeq(), s.GetTakeovers())
	}

	_, err := e.api.GetSession(timeout(t, wait), &tlsgatev1.GetSessionRequest{SessionId: 12345})
	wantCode(t, err, codes.NotFound, "session 12345")
	_, err = e.api.GetSession(timeout(t, wait), &tlsgatev1.GetSessionRequest{})
	wantCode(t, err, codes.InvalidArgument, "session_id")
}

// TestGetSessionTakeoverAndAck: takeovers counts new connections of the
// identity; last_flush_ack_seq follows Drain with ack.
func TestGetSessionTakeoverAndAck(t *testing.T) {
	e := start(t, setup{})
	key := newKey(t)
	old := e.dialRaw(t, key)
	first := e.getSession(t, old.ID()).GetConnectionId()
	c := e.dialGo(t, key, client.WithHandler(func(client.Packet) {}))
	s := e.getSession(t, c.ID())
	if s.GetTakeovers() != 1 || s.GetConnectionId() == first {
		t.Fatalf("after a takeover: takeovers %d, connection %d (was %d)", s.GetTakeovers(), s.GetConnectionId(), first)
	}
	for want := uint64(1); want <= 2; want++ {
		e.sendAsync(t, c.ID(), tlsgatev1.Encoding_ENCODING_JSON, []byte("x"))
		if _, err := e.api.Drain(timeout(t, wait), drainOne(c.ID(), true)); err != nil {
			t.Fatal(err)
		}
		if got := e.getSession(t, c.ID()).GetLastFlushAckSeq(); got != want {
			t.Fatalf("last_flush_ack_seq %d after barrier %d", got, want)
		}
	}
}

// list pages through ListSessions and returns the pages' session IDs.
func (e *env) list(t *testing.T, req *tlsgatev1.ListSessionsRequest) [][]uint64 {
	t.Helper()
	var pages [][]uint64
	for {
		resp, err := e.api.ListSessions(timeout(t, wait), req)
		if err != nil {
			t.Fatal(err)
		}
		var ids []uint64
		for _, s := range resp.GetSessions() {
			ids = append(ids, s.GetSessionId())
		}
		pages = append(pages, ids)
		if resp.GetNextPageToken() == "" {
			return pages
		}
		if len(pages) > 100 {
			t.Fatal("over 100 pages")
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func pageSizes(pages [][]uint64) []int {
	var n []int
	for _, p := range pages {
		n = append(n, len(p))
	}
	return n
}

// TestListSessionsPagination: pages of page_size ordered by ID, with no
// phantom empty last page.
func TestListSessionsPagination(t *testing.T) {
	e := start(t, setup{})
	var ids []uint64
	for range 6 {
		ids = append(ids, e.dialRaw(t, nil).ID())
	}
	slices.Sort(ids)

	pages := e.list(t, &tlsgatev1.ListSessionsRequest{PageSize: 3})
	if !slices.Equal(pageSizes(pages), []int{3, 3}) || !slices.Equal(slices.Concat(pages...), ids) {
		t.Fatalf("6 sessions by 3: pages %v, want %v in two pages", pages, ids)
	}

	ids = append(ids, e.dialRaw(t, nil).ID())
	slices.Sort(ids)
	pages = e.list(t, &tlsgatev1.ListSessionsRequest{PageSize: 3})
	if !slices.Equal(pageSizes(pages), []int{3, 3, 1}) || !slices.Equal(slices.Concat(pages...), ids) {
		t.Fatalf("7 sessions by 3: pages %v, want %v in pages of 3, 3, 1", pages, ids)
	}
	// The default page size takes them all.
	if pages := e.list(t, &tlsgatev1.ListSessionsRequest{}); !slices.Equal(pageSizes(pages), []int{7}) {
		t.Fatalf("default page size: pages %v", pages)
	}

	// Stable: a session that ends between pages does not shift the next
	// page; one that is new and sorts after the cursor shows up in it.
	resp, err := e.api.ListSessions(timeout(t, wait), &tlsgatev1.ListSessionsRequest{PageSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.api.Disconnect(timeout(t, wait), &tlsgatev1.DisconnectRequest{SessionId: ids[0], Force: true}); err != nil {
		t.Fatal(err)
	}
	next := e.list(t, &tlsgatev1.ListSessionsRequest{PageSize: 3, PageToken: resp.GetNextPageToken()})
	if !slices.Equal(slices.Concat(next...), ids[3:]) {
		t.Fatalf("after the first page lost a session the rest is %v, want %v", next, ids[3:])
	}
}

// TestListSessionsFilters: by state and by remote address prefix.
func TestListSessionsFilters(t *testing.T) {
	e := start(t, setup{gateway: server.Config{LingerTimeout: 3 * wait}})
	var active []uint64
	for range 3 {
		active = append(active, e.dialRaw(t, nil).ID())
	}
	slices.Sort(active)
	// One session closing: its client answers the server's Goodbye and
	// reads the close_notify, which the server sends once it lingers,
	// CLOSING, until the client closes the socket.
	closing := e.dialRaw(t, nil)
	disconnected := make(chan error, 1)
	go func() {
		_, err := e.api.Disconnect(timeout(t, 2*wait), &tlsgatev1.DisconnectRequest{SessionId: closing.ID()})
		disconnected <- err
	}()
	readGoodbye(t, closing)
	closing.WriteControl(t, wire.TypeGoodbye, wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
	closing.ExpectEOF(t)

	states := func(s ...tlsgatev1.SessionState) []uint64 {
		return slices.Concat(e.list(t, &tlsgatev1.ListSessionsRequest{States: s})...)
	}
	if got := states(tlsgatev1.SessionState_SESSION_STATE_ACTIVE); !slices.Equal(got, active) {
		t.Fatalf("ACTIVE: %v, want %v", got, active)
	}
	if got := states(tlsgatev1.SessionState_SESSION_STATE_CLOSING); !slices.Equal(got, []uint64{closing.ID()}) {
		t.Fatalf("CLOSING: %v, want %d", got, closing.ID())
	}
	if got := states(tlsgatev1.SessionState_SESSION_STATE_DRAINING, tlsgatev1.SessionState_SESSION_STATE_HANDSHAKING); len(got) != 0 {
		t.Fatalf("DRAINING or HANDSHAKING: %v, want none", got)
	}
	if got := states(tlsgatev1.SessionState_SESSION_STATE_ACTIVE, tlsgatev1.SessionState_SESSION_STATE_CLOSING); len(got) != 4 {
		t.Fatalf("ACTIVE or CLOSING: %v, want all 4", got)
	}
	if s := e.getSession(t, closing.ID()); s.GetState() != tlsgatev1.SessionState_SESSION_STATE_CLOSING {
		t.Fatalf("GetSession of the closing session: state %s", s.GetState())
	}

	prefix := func(p string, size uint32) [][]uint64 {
		return e.list(t, &tlsgatev1.ListSessionsRequest{RemoteAddressPrefix: p, PageSize: size})
	}
	if got := prefix("127.0.0.1:", 0); len(got[0]) != 4 {
		t.Fatalf("prefix 127.0.0.1: %v, want all 4", got)
	}
	if got := prefix("10.", 0); len(got) != 1 || len(got[0]) != 0 {
		t.Fatalf("prefix 10.: %v, want one empty page", got)
	}
	one := closing.TLS().LocalAddr().String()
	if got := prefix(one, 0); !slices.Equal(slices.Concat(got...), []uint64{closing.ID()}) {
		t.Fatalf("prefix %s: %v, want %d", one, got, closing.ID())
	}
	// Filters and pages together: 4 by 3 is 3 then 1.
	if got := prefix("127.", 3); !slices.Equal(pageSizes(got), []int{3, 1}) {
		t.Fatalf("prefix 127. by 3: %v", got)
	}

	_ = closing.Close()
	if err := <-disconnected; err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
}

// TestListSessionsErrors: invalid requests name their field.
func TestListSessionsErrors(t *testing.T) {
	e := start(t, setup{})
	for _, tc := range []struct {
		req *tlsgatev1.ListSessionsRequest
		msg []string
	}{
		{&tlsgatev1.ListSessionsRequest{PageSize: 1001}, []string{"page_size", "1001"}},
		{&tlsgatev1.ListSessionsRequest{PageToken: "garbage!"}, []string{"page_token"}},
		{&tlsgatev1.ListSessionsRequest{PageToken: "djE"}, []string{"page_token"}}, // base64 of "v1", too short
		{&tlsgatev1.ListSessionsRequest{States: []tlsgatev1.SessionState{tlsgatev1.SessionState_SESSION_STATE_UNSPECIFIED}}, []string{"states[0]"}},
		{&tlsgatev1.ListSessionsRequest{States: []tlsgatev1.SessionState{tlsgatev1.SessionState_SESSION_STATE_ACTIVE, 42}}, []string{"states[1]", "42"}},
	} {
		t.Run(strings.Join(tc.msg, "_"), func(t *testing.T) {
			_, err := e.api.ListSessions(timeout(t, wait), tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.msg...)
		})
	}
	if resp, err := e.api.ListSessions(timeout(t, wait), &tlsgatev1.ListSessionsRequest{PageSize: 1000}); err != nil || len(resp.GetSessions()) != 0 || resp.GetNextPageToken() != "" {
		t.Fatalf("page_size 1000 of no sessions: %v, %v", resp, err)
	}
}
