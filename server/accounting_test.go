package server_test

import (
	"errors"
	"runtime"
	"testing"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestQueueChargeBoundsMemory: clients that never read are sent empty and
// 1-byte packets until their queues refuse. Each packet is charged its
// entry and its payload's allocation, so the heap the queues hold is
// within a small factor of the bound, whatever the frame size (counted as
// frame bytes, as before, empty frames held 16 times the bound).
func TestQueueChargeBoundsMemory(t *testing.T) {
	const sessions, bound = 4, 1 << 20
	ts := startServer(t, server.Config{Handler: server.Discard{}, QueueBytes: bound})
	payloads := [][]byte{nil, {'x'}}
	var ss []*server.Session
	for range sessions {
		c := wiretest.Connect(t, ts.addr, newKey(t))
		ss = append(ss, mustSession(t, ts, c.ID()))
	}
	before := heapInUse()
	accepted := 0
	for i, sess := range ss {
		p := payloads[i%len(payloads)]
		for {
			_, err := sess.SendAsync(wire.JSON, p)
			if errors.Is(err, server.ErrQueueFull) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			accepted++
		}
		// (The writer may have drained some since the refusal: the kernel's
		// socket buffers grow.)
		if _, b := sess.QueueDepth(); b > bound {
			t.Fatalf("session %d holds %d bytes charged, over its bound of %d", i, b, bound)
		}
	}
	growth := heapInUse() - before
	t.Logf("%d packets accepted (most written to the sockets); heap growth %d KiB for %d sessions of a %d KiB bound: %.2f× the bounds",
		accepted, growth>>10, sessions, bound>>10, float64(growth)/float64(sessions*bound))
	if growth > 2*sessions*bound {
		t.Fatalf("heap grew %d bytes, over twice the %d bytes the bounds allow", growth, sessions*bound)
	}
}
