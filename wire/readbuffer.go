package wire

import (
	"bufio"
	"io"
	"sync"
)

// Source is what a Reader reads frames from: a *bufio.Reader, or a
// *ReadBuffer, whose buffer follows the traffic. Size is the largest Peek
// it serves; a frame that fits is decoded in place.
type Source interface {
	io.Reader
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Size() int
}

// Default bounds of a ReadBuffer: a frame header and a small payload, and
// the largest frame.
const (
	MinReadBuffer = 512
	MaxReadBuffer = HeaderLen + MaxPayload
)

// ReadBuffer is a buffered reader whose buffer follows the traffic, in
// the manner of nats-server's client: it reads into a small buffer (its
// minimum) while reads are short, switches to a buffer of its maximum when
// a read fills the small one or a frame needs more, and gives the large
// one back to a pool whenever it is empty: so a connection waits for its
// next packet with the small buffer only, however busy it was, and a busy
// one reads as much per call as with a fixed large buffer (the large
// buffers cycle through the pool without being allocated again).
type ReadBuffer struct {
	rd       io.Reader
	buf      []byte // small or *large
	small    []byte
	large    *[]byte // from the pool while in use
	r, w     int
	min, max int
	grow     bool // the last read filled the small buffer
	err      error
}

// NewReadBuffer returns a ReadBuffer on rd with buffers of minSize and
// maxSize bytes (MinReadBuffer and MaxReadBuffer where they are not
// positive).
func NewReadBuffer(rd io.Reader, minSize, maxSize int) *ReadBuffer {
	if minSize <= 0 {
		minSize = MinReadBuffer
	}
	if maxSize <= 0 {
		maxSize = MaxReadBuffer
	}
	maxSize = max(maxSize, minSize)
	return &ReadBuffer{rd: rd, min: minSize, max: maxSize}
}

// largeBufs pools the large buffers, by size (a *sync.Pool of *[]byte).
var largeBufs sync.Map

func largePool(size int) *sync.Pool {
	if p, ok := largeBufs.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := largeBufs.LoadOrStore(size, &sync.Pool{New: func() any {
		b := make([]byte, size)
		return &b
	}})
	return p.(*sync.Pool)
}

// Size is the largest Peek the buffer serves: its maximum.
func (b *ReadBuffer) Size() int { return b.max }

// Buffered is how many bytes can be read without a read from below.
func (b *ReadBuffer) Buffered() int { return b.w - b.r }

// Cap is the size of the buffer in use (0 before the first read).
func (b *ReadBuffer) Cap() int { return cap(b.buf) }

// fill reads once from below, first making room for at least need
// buffered bytes. Call it only with fewer than need bytes buffered.
func (b *ReadBuffer) fill(need int) {
	if b.r == b.w {
		b.r, b.w = 0, 0
		if b.large != nil {
			largePool(b.max).Put(b.large)
			b.large, b.buf = nil, nil
		}
		if b.buf == nil {
			if b.small == nil {
				b.small = make([]byte, b.min)
			}
			b.buf = b.small
			b.grow = b.grow && b.min < b.max // a busy connection goes on large
		}
	}
	if b.r > 0 { // slide what is left to the front, as bufio does
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	if cap(b.buf) < b.max && (b.grow || need > cap(b.buf)) {
		b.large = largePool(b.max).Get().(*[]byte)
		b.w = copy(*b.large, b.buf[:b.w])
		b.buf = *b.large
	}
	n, err := b.rd.Read(b.buf[b.w:])
	free := len(b.buf) - b.w
	b.w += n
	b.grow = n == free && free > 0
	if err != nil {
		b.err = err
	}
}

func (b *ReadBuffer) readErr() error {
	err := b.err
	b.err = nil
	return err
}

// Peek returns the next n bytes without consuming them, reading (and
// growing) as needed. With fewer than n bytes it returns them with the
// error that stopped it; n over the maximum is bufio.ErrBufferFull.
func (b *ReadBuffer) Peek(n int) ([]byte, error) {
	if n > b.max {
		return b.buf[b.r:b.w], bufio.ErrBufferFull
	}
	for b.w-b.r < n && b.err == nil {
		b.fill(n)
	}
	if b.w-b.r < n {
		return b.buf[b.r:b.w], b.readErr()
	}
	return b.buf[b.r : b.r+n], nil
}

// Discard skips the next n bytes, reading as needed, and returns how many
// it skipped.
func (b *ReadBuffer) Discard(n int) (int, error) {
	done := 0
	for {
		k := min(n-done, b.w-b.r)
		b.r += k
		done += k
		if done == n {
			return done, nil
		}
		if b.err != nil {
			return done, b.readErr()
		}
		b.fill(1)
	}
}

// Read reads into p: what is buffered first, and otherwise one read from
// below.
func (b *ReadBuffer) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.r == b.w {
		if b.err != nil {
			return 0, b.readErr()
		}
		b.fill(1)
		if b.r == b.w {
			return 0, b.readErr()
		}
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}
