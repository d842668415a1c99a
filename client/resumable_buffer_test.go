package client_test

import (
	"slices"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
)

func TestOutBufferNumbersAndAcks(t *testing.T) {
	var b client.OutBuffer
	for i, f := range []string{"a", "bb", "ccc", "dddd"} {
		if n := b.Push([]byte(f)); n != uint64(i+1) {
			t.Fatalf("Push %q: number %d, want %d", f, n, i+1)
		}
	}
	if b.Len() != 4 || b.Bytes() != 10 || b.Last() != 4 {
		t.Fatalf("after 4 pushes: len %d bytes %d last %d", b.Len(), b.Bytes(), b.Last())
	}
	if n, ok := b.Ack(2); !ok || n != 2 || b.Bytes() != 7 || b.Acked() != 2 {
		t.Fatalf("Ack 2: freed %d ok %v bytes %d acked %d", n, ok, b.Bytes(), b.Acked())
	}
	if n, ok := b.Ack(1); !ok || n != 0 || b.Acked() != 2 {
		t.Fatalf("an older ack: freed %d ok %v acked %d, want nothing changed", n, ok, b.Acked())
	}
	if _, ok := b.Ack(5); ok || b.Len() != 2 {
		t.Fatalf("an ack beyond the last packet: ok %v len %d, want refused", ok, b.Len())
	}
	nums, frames := b.After(3)
	if !slices.Equal(nums, []uint64{4}) || !slices.Equal(frames, []string{"dddd"}) {
		t.Fatalf("After 3: %v %v", nums, frames)
	}
	nums, _ = b.After(0)
	if !slices.Equal(nums, []uint64{3, 4}) {
		t.Fatalf("After 0: %v, want the unacked 3 and 4", nums)
	}
	// A new epoch renumbers from 1; only sent packets may be duplicates.
	b.Push([]byte("e"))
	if n := b.Renumber(); n != 0 {
		t.Fatalf("Renumber with nothing sent: %d possible duplicates", n)
	}
	b.MarkSent()
	b.Push([]byte("f"))
	if n := b.Renumber(); n != 3 {
		t.Fatalf("Renumber: %d possible duplicates, want 3", n)
	}
	nums, frames = b.After(0)
	if !slices.Equal(nums, []uint64{1, 2, 3, 4}) || !slices.Equal(frames, []string{"ccc", "dddd", "e", "f"}) || b.Acked() != 0 || b.Last() != 4 {
		t.Fatalf("after Renumber: %v %v acked %d last %d", nums, frames, b.Acked(), b.Last())
	}
	if n, ok := b.Ack(4); !ok || n != 4 || b.Len() != 0 || b.Bytes() != 0 {
		t.Fatalf("Ack all: freed %d ok %v len %d bytes %d", n, ok, b.Len(), b.Bytes())
	}
}

func TestOutBufferFits(t *testing.T) {
	var b client.OutBuffer
	if !b.Fits(100, 10) {
		t.Fatal("an empty buffer must take a packet larger than the bound")
	}
	b.Push(make([]byte, 6))
	if !b.Fits(4, 10) || b.Fits(5, 10) {
		t.Fatal("Fits: want 4 more bytes in, 5 out")
	}
}

func TestBackoffBounds(t *testing.T) {
	const base, ceiling = 100 * time.Millisecond, 10 * time.Second
	top := func(k int64) int64 { return k - 1 } // the largest the jitter can draw
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000}
	for n, w := range want {
		if got := client.Backoff(n, base, ceiling, top); got != w*time.Millisecond-1 {
			t.Errorf("attempt %d: ceiling %v, want just under %v", n, got+1, w*time.Millisecond)
		}
		if got := client.Backoff(n, base, ceiling, func(int64) int64 { return 0 }); got != 0 {
			t.Errorf("attempt %d: floor %v, want 0 (full jitter)", n, got)
		}
	}
	if got := client.Backoff(1000, base, ceiling, top); got != ceiling-1 {
		t.Errorf("attempt 1000: %v, want the cap", got)
	}
	for range 1000 {
		if d := client.Backoff(3, base, ceiling, nil); d < 0 || d >= 800*time.Millisecond {
			t.Fatalf("attempt 3: %v outside [0, 800ms)", d)
		}
	}
}
