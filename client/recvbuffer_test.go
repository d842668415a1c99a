package client_test

import (
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/wire"
)

// TestRecvBufferOfOne: with room for one packet, the reader waits for Recv
// before it takes the next, and every packet still arrives, in order,
// with the control traffic behind them answered.
func TestRecvBufferOfOne(t *testing.T) {
	p := newPeer(t)
	c, _, pc := dial(t, p, client.WithRecvBuffer(1))
	for _, s := range []string{"a", "b", "c"} {
		pc.send(wire.TypeData, wire.JSON, []byte(s))
	}
	pc.send(wire.TypePing, wire.JSON, wire.PingPayload{Nonce: 9})
	for _, s := range []string{"a", "b", "c"} {
		recvData(t, c, s)
	}
	if n := decodePing(t, pc.nextOf(wire.TypePong)); n != 9 {
		t.Fatalf("Pong %d, want 9", n)
	}
}

func TestRecvBufferMustHoldAPacket(t *testing.T) {
	p := newPeer(t)
	_, err := client.Dial(testCtx(t), p.ln.Addr().String(), newKey(t), client.WithFingerprint(p.fp), client.WithRecvBuffer(0))
	if err == nil || !strings.Contains(err.Error(), "receive buffer must hold at least one packet") {
		t.Fatalf("Dial with WithRecvBuffer(0): %v, want the buffer refused", err)
	}
}
