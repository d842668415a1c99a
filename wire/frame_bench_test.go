package wire_test

import (
	"bufio"
	"bytes"
	"io"
	"testing"

	"github.com/tlsgate/tlsgate/wire"
)

// Frame encode and decode, the per-packet work of every reader and writer.
// Run with -benchmem: encoding into a reused buffer allocates nothing;
// decoding allocates exactly the payload (ReadFrame hands the caller a
// fresh slice it owns), so 0 allocs/op at 0 bytes and 1 above, and nothing
// at all with ReadFrameBorrowed (the server's reader).

var benchSizes = []struct {
	name string
	n    int
}{{"0B", 0}, {"64B", 64}, {"1KiB", 1024}, {"64KiB", wire.MaxPayload}}

func BenchmarkAppendFrame(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			payload := make([]byte, sz.n)
			buf := make([]byte, 0, wire.HeaderLen+sz.n)
			b.SetBytes(int64(wire.HeaderLen + sz.n))
			b.ReportAllocs()
			for b.Loop() {
				buf = wire.AppendFrame(buf[:0], wire.TypeData, wire.JSON, payload)
			}
			if len(buf) != wire.HeaderLen+sz.n {
				b.Fatal("short frame")
			}
		})
	}
}

// BenchmarkHeaderBufio is the server writer's per-packet work: the header
// and the payload written into a 64 KiB bufio.Writer, flushed when full.
func BenchmarkHeaderBufio(b *testing.B) {
	for _, sz := range benchSizes[:3] {
		b.Run(sz.name, func(b *testing.B) {
			payload := make([]byte, sz.n)
			bw := bufio.NewWriterSize(io.Discard, 64<<10)
			b.SetBytes(int64(wire.HeaderLen + sz.n))
			b.ReportAllocs()
			for b.Loop() {
				h := wire.Header(wire.TypeData, wire.JSON, len(payload))
				_, _ = bw.Write(h[:])
				_, _ = bw.Write(payload)
			}
			if err := bw.Flush(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// repeatReader serves the same stream of frames forever, without allocating.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

// BenchmarkReadFrame reads frames through a 64 KiB bufio.Reader and
// through a ReadBuffer (the server's), which must be as fast.
func BenchmarkReadFrame(b *testing.B) {
	sources := []struct {
		name string
		new  func(io.Reader) wire.Source
	}{
		{"bufio", func(r io.Reader) wire.Source { return bufio.NewReaderSize(r, 64<<10) }},
		{"readbuffer", func(r io.Reader) wire.Source { return wire.NewReadBuffer(r, 0, 0) }},
	}
	for _, src := range sources {
		for _, borrow := range []bool{false, true} {
			for _, sz := range benchSizes {
				name := src.name + "/" + sz.name
				if borrow {
					name = src.name + "/borrowed/" + sz.name
				}
				benchReadFrame(b, name, src.new, borrow, sz.n)
			}
		}
	}
}

func benchReadFrame(b *testing.B, name string, newSource func(io.Reader) wire.Source, borrow bool, n int) {
	b.Run(name, func(b *testing.B) {
		var stream []byte
		for range max(1, (64<<10)/(wire.HeaderLen+n)) {
			stream = wire.AppendFrame(stream, wire.TypeData, wire.MsgPack, bytes.Repeat([]byte{'x'}, n))
		}
		fr := wire.NewReader(newSource(&repeatReader{data: stream}), wire.MaxPayload)
		read := fr.ReadFrame
		if borrow {
			read = fr.ReadFrameBorrowed
		}
		b.SetBytes(int64(wire.HeaderLen + n))
		b.ReportAllocs()
		for b.Loop() {
			f, err := read()
			if err != nil || len(f.Payload) != n {
				b.Fatalf("frame %d bytes, err %v", len(f.Payload), err)
			}
		}
	})
}

func BenchmarkMarshalControl(b *testing.B) {
	for _, enc := range []wire.Encoding{wire.JSON, wire.MsgPack} {
		b.Run(enc.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := wire.Marshal(enc, wire.FlushPayload{Seq: 7}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeFlush(b *testing.B) {
	for _, enc := range []wire.Encoding{wire.JSON, wire.MsgPack} {
		b.Run(enc.String(), func(b *testing.B) {
			p, err := wire.Marshal(enc, wire.FlushPayload{Seq: 7})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := wire.DecodeFlush(enc, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
