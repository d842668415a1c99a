package wire

import (
	"bufio"
	"io"
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

// ReadBuffer is a buffered reader whose buffer follows the traffic, as
// nats-server's client does: it starts at its minimum, doubles after a
// read that fills it (up to its maximum, which a Peek of a large frame
// also grows it to), and goes back to the minimum when it is empty after a
// short read (under an eighth of the room it had), before the read that
// waits for more. So an idle connection
// holds the minimum, and a busy one reads as much per call as it would
// with a fixed buffer of the maximum.
type ReadBuffer struct {
	rd       io.Reader
	buf      []byte
	r, w     int
	min, max int
	grow     bool // the last read filled the buffer
	short    bool // the last read was short: the burst, if any, is over
	err      error
}

// NewReadBuffer returns a ReadBuffer on rd between minSize and maxSize
// bytes (MinReadBuffer and MaxReadBuffer where they are not positive).
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

// Size is the largest Peek the buffer serves: its maximum.
func (b *ReadBuffer) Size() int { return b.max }

// Buffered is how many bytes can be read without a read from below.
func (b *ReadBuffer) Buffered() int { return b.w - b.r }

// Cap is the buffer's current allocation.
func (b *ReadBuffer) Cap() int { return cap(b.buf) }

// fill reads once from below, first making room for at least need
// buffered bytes. Call it only with fewer than need bytes buffered.
func (b *ReadBuffer) fill(need int) {
	if b.r == b.w {
		b.r, b.w = 0, 0
		if b.short && cap(b.buf) > b.min {
			b.buf = nil // idle again: wait with the minimum
		}
	}
	if b.r > 0 { // slide what is left to the front, as bufio does
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	size := cap(b.buf)
	switch {
	case size == 0:
		size = b.min
	case b.grow || b.w == size:
		size *= 2
	}
	size = min(max(size, need), b.max)
	if size != cap(b.buf) {
		buf := make([]byte, size)
		b.w = copy(buf, b.buf[:b.w])
		b.buf = buf
	}
	n, err := b.rd.Read(b.buf[b.w:])
	free := len(b.buf) - b.w
	b.w += n
	b.grow = n == free && free > 0
	// Short: far below the room there was. Not "less than the room": over
	// TLS a read returns one record (16 KiB) at most, however busy.
	b.short = n < free/8
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
