package wire_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/tlsgate/tlsgate/wire"
)

// pacedReader hands out what the test puts in it, one chunk per Read,
// and EOF when it is empty: a connection whose peer sends in bursts.
type pacedReader struct{ chunks [][]byte }

func (p *pacedReader) Read(b []byte) (int, error) {
	if len(p.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.chunks[0])
	if p.chunks[0] = p.chunks[0][n:]; len(p.chunks[0]) == 0 {
		p.chunks = p.chunks[1:]
	}
	return n, nil
}

// TestReadBufferFollowsTheTraffic: the buffer starts at its minimum,
// switches to its maximum when a read fills it or a frame needs more, and
// waits with its minimum again once it is empty after a read that did not
// fill it; the bytes read are the bytes sent, whatever the size.
func TestReadBufferFollowsTheTraffic(t *testing.T) {
	bulk := bytes.Repeat([]byte{0xab}, 1<<20)
	src := &pacedReader{chunks: [][]byte{bulk, []byte("tail")}}
	b := wire.NewReadBuffer(src, 512, 64<<10)
	if b.Cap() != 0 || b.Size() != 64<<10 {
		t.Fatalf("new buffer: cap %d, size %d; want 0 (nothing allocated before the first read) and 64 KiB", b.Cap(), b.Size())
	}
	p := make([]byte, 100)
	got := 0
	caps := []int{}
	for got < len(bulk) {
		n, err := io.ReadFull(b, p[:min(len(p), len(bulk)-got)])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p[:n], bulk[got:got+n]) {
			t.Fatalf("bytes %d..%d differ", got, got+n)
		}
		got += n
		if c := b.Cap(); len(caps) == 0 || caps[len(caps)-1] != c {
			caps = append(caps, c)
		}
	}
	if caps[0] != 512 || caps[len(caps)-1] != 64<<10 {
		t.Fatalf("capacities during the bulk read: %v; want 512, then 64 KiB", caps)
	}
	tail, err := b.Peek(4)
	if err != nil || string(tail) != "tail" {
		t.Fatalf("Peek(4): %q, %v", tail, err)
	}
	if _, err := b.Discard(4); err != nil {
		t.Fatal(err)
	}
	// Empty after a short read: the next read waits with the minimum.
	src.chunks = [][]byte{{1, 2}}
	if n, err := b.Read(p); err != nil || n != 2 {
		t.Fatalf("Read: %d, %v", n, err)
	}
	if b.Cap() != 512 {
		t.Fatalf("cap %d after a burst and a short read, want 512", b.Cap())
	}
	// A frame larger than the buffer: one Peek grows it to fit.
	big := bytes.Repeat([]byte{7}, 40000)
	src.chunks = [][]byte{big}
	if got, err := b.Peek(len(big)); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("Peek(%d): %d bytes, %v", len(big), len(got), err)
	}
	if _, err := b.Peek(64<<10 + 1); err == nil {
		t.Fatal("Peek over the maximum succeeded")
	}
	if _, err := b.Discard(len(big)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Peek(1); !errors.Is(err, io.EOF) {
		t.Fatalf("Peek at the end: %v, want EOF", err)
	}
}
