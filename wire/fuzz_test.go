package wire_test

// Native Go fuzz targets for the wire protocol. Each target checks
// properties, not only the absence of panics. The corpus is the f.Add calls
// below plus the files in testdata/fuzz/<Target>/, which `go test` runs as
// ordinary subtests; `make fuzz` runs each target for FUZZTIME. A crash
// found by fuzzing is committed to testdata/fuzz/<Target>/ (go test writes
// it there) and so becomes a regression test.

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tlsgate/tlsgate/wire"
)

// errStreamBroken ends a chunkReader's stream in place of io.EOF: ReadFrame
// must hand such errors back as they are.
var errStreamBroken = errors.New("fuzz: stream broken")

// End modes of a chunkReader.
const (
	endEOF         = iota // the last chunk, then 0, io.EOF
	endEOFWithData        // the last chunk comes with io.EOF
	endBroken             // the last chunk, then 0, errStreamBroken
	numEndModes
)

// chunkReader returns data in chunks whose sizes cycle through sizes (each
// byte s is a chunk of s+1 bytes; no sizes means one chunk), then ends the
// stream as mode says.
type chunkReader struct {
	data  []byte
	sizes []byte
	i     int
	mode  int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		if r.mode == endBroken {
			return 0, errStreamBroken
		}
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.sizes) > 0 {
		n = min(n, int(r.sizes[r.i%len(r.sizes)])+1)
		r.i++
	}
	n = copy(p, r.data[:n])
	r.data = r.data[n:]
	if len(r.data) == 0 && r.mode == endEOFWithData {
		return n, io.EOF
	}
	return n, nil
}

// readAll decodes frames until the first error, which it returns with them.
func readAll(t *testing.T, r *wire.Reader, limit int) ([]wire.Frame, error) {
	t.Helper()
	var frames []wire.Frame
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return frames, err
		}
		frames = append(frames, f)
		if len(frames) > limit {
			t.Fatalf("more than %d frames from the stream", limit)
		}
	}
}

// checkFrames checks what a Reader decoded from data against the frame
// format itself: every frame re-encodes to exactly the bytes it came from,
// and the error that ended the stream is the one the remaining bytes call for.
func checkFrames(t *testing.T, data []byte, maxPayload, mode int, frames []wire.Frame, err error) {
	t.Helper()
	off := 0
	for i, f := range frames {
		if !f.Encoding.Valid() || f.Type > 0x3f {
			t.Fatalf("frame %d: encoding %s, type %s", i, f.Encoding, f.Type)
		}
		if len(f.Payload) > maxPayload {
			t.Fatalf("frame %d: %d payload bytes over the maximum of %d", i, len(f.Payload), maxPayload)
		}
		enc := wire.AppendFrame(nil, f.Type, f.Encoding, f.Payload)
		if len(enc) != f.Len() || !bytes.HasPrefix(data[off:], enc) {
			t.Fatalf("frame %d at offset %d re-encodes to % x, not the bytes it came from", i, off, enc)
		}
		off += len(enc)
	}
	rest := data[off:]
	// What ends the stream: io.EOF, or errStreamBroken in its place.
	wantEnd := func(what string) {
		t.Helper()
		want := io.EOF
		if mode == endBroken {
			want = errStreamBroken
		} else if what != "boundary" {
			want = wire.ErrTruncated
		}
		if !errors.Is(err, want) {
			t.Fatalf("after %d frames, %d bytes left (%s): got %v, want %v", len(frames), len(rest), what, err, want)
		}
	}
	if len(rest) == 0 {
		wantEnd("boundary")
		return
	}
	if len(rest) < wire.HeaderLen {
		wantEnd("inside a header")
		return
	}
	version, enc, typ := rest[0], wire.Encoding(rest[1]>>6), wire.Type(rest[1]&0x3f)
	if version != wire.Version || !enc.Valid() {
		var fe *wire.FramingError
		if !errors.As(err, &fe) || fe.Version != version || fe.Encoding != enc {
			t.Fatalf("header % x: got %v, want a FramingError", rest[:wire.HeaderLen], err)
		}
		return
	}
	n := int(binary.BigEndian.Uint16(rest[2:]))
	if n > maxPayload {
		var tl *wire.TooLargeError
		if !errors.As(err, &tl) || *tl != (wire.TooLargeError{Type: typ, Encoding: enc, Len: n, Max: maxPayload}) {
			t.Fatalf("header % x, max %d: got %v, want a TooLargeError", rest[:wire.HeaderLen], maxPayload, err)
		}
		return
	}
	if len(rest) < wire.HeaderLen+n {
		wantEnd("inside a payload")
		return
	}
	t.Fatalf("a whole, valid frame (header % x) was refused: %v", rest[:wire.HeaderLen], err)
}

func sameOutcome(a, b error) bool {
	if errors.Is(a, io.EOF) || errors.Is(a, wire.ErrTruncated) || errors.Is(a, errStreamBroken) {
		return errors.Is(b, a) && errors.Is(a, b)
	}
	return a.Error() == b.Error() && fmt.Sprintf("%T", a) == fmt.Sprintf("%T", b)
}

// FuzzFrameReader decodes an arbitrary byte stream split at arbitrary points
// and checks the frames and the final error against the unsplit stream and
// against the frame format.
func FuzzFrameReader(f *testing.F) {
	var valid []byte
	valid = wire.AppendFrame(valid, wire.TypeData, wire.JSON, []byte(`{"hello":"world"}`))
	valid = wire.AppendFrame(valid, wire.TypeFlush, wire.MsgPack, []byte{0x81, 0xa3, 's', 'e', 'q', 0x07})
	valid = wire.AppendFrame(valid, wire.TypePing, wire.JSON, nil)
	valid = wire.AppendFrame(valid, wire.Type(0x3f), wire.MsgPack, bytes.Repeat([]byte{0xab}, 300))
	for _, s := range []struct {
		data, sizes []byte
		max         uint16
		bufSize     uint16
		mode        uint8
	}{
		{valid, nil, wire.MaxPayload, 4096, endEOF},
		{valid, []byte{0}, 300, 0, endEOFWithData},
		{valid, []byte{2, 0, 6, 255}, 299, 17, endBroken},
		{valid[:len(valid)-1], []byte{3}, 1000, 64, endEOF},
		{valid[:2], nil, 1000, 64, endEOFWithData},
		{append(append([]byte{}, valid[:21]...), 2, 1, 0, 0), []byte{1, 4}, 1000, 16, endEOF},
		{[]byte{1, 0x81, 0, 0}, nil, 1, 0, endEOF},
		{[]byte{1, 0xc5, 0, 0}, nil, 1, 0, endBroken},
		{[]byte{1, 0x41, 0xff, 0xfb}, []byte{0}, wire.MaxPayload, 0, endEOF},
		{[]byte{1, 0x41, 0xff, 0xfc}, nil, wire.MaxPayload, 0, endEOF},
		{nil, nil, 0, 0, endEOF},
		{nil, nil, 0, 0, endBroken},
	} {
		f.Add(s.data, s.sizes, s.max, s.bufSize, s.mode)
		f.Add(s.data, s.sizes, s.max, s.bufSize|0x8000, s.mode) // through a ReadBuffer
	}
	f.Fuzz(func(t *testing.T, data, sizes []byte, maxPayload, bufSize uint16, mode uint8) {
		maxP := max(1, min(int(maxPayload), wire.MaxPayload)) // 1..65531
		end := int(mode % numEndModes)
		limit := len(data)/wire.HeaderLen + 1

		whole := wire.NewReader(bufio.NewReader(&chunkReader{data: data, mode: end}), maxP)
		wantFrames, wantErr := readAll(t, whole, limit)
		checkFrames(t, data, maxP, end, wantFrames, wantErr)

		// bufio's minimum size is 16; a read of at least the buffer's size
		// bypasses it, so small buffers exercise both paths. With the top
		// bit of bufSize, the source is a ReadBuffer that grows from a
		// minimum of that size and shrinks back after short reads.
		src := &chunkReader{data: data, sizes: sizes, mode: end}
		var br wire.Source = bufio.NewReaderSize(src, 16+int(bufSize)%4096)
		if bufSize&0x8000 != 0 {
			br = wire.NewReadBuffer(src, 1+int(bufSize)%4096, 0)
		}
		r := wire.NewReader(br, maxP)
		var got []wire.Frame
		var err error
		for {
			// Owned and borrowed reads, mixed as the input says, decode
			// the same frames.
			borrow := (int(bufSize)>>12+len(got))%3 == 0
			var fr wire.Frame
			if borrow {
				fr, err = r.ReadFrameBorrowed()
			} else {
				fr, err = r.ReadFrame()
			}
			if err != nil {
				break
			}
			i := len(got)
			if i >= len(wantFrames) {
				t.Fatalf("split stream: frame %d (%s), whole stream ended with %v", i, fr.Type, wantErr)
			}
			w := wantFrames[i]
			if fr.Type != w.Type || fr.Encoding != w.Encoding || !bytes.Equal(fr.Payload, w.Payload) {
				t.Fatalf("split stream: frame %d is %s/%s %d bytes, want %s/%s %d bytes",
					i, fr.Type, fr.Encoding, len(fr.Payload), w.Type, w.Encoding, len(w.Payload))
			}
			// An owned payload is the caller's: scribbling on it must not
			// change the frames that follow.
			if !borrow {
				for j := range fr.Payload {
					fr.Payload[j] ^= 0xff
				}
			}
			got = append(got, fr)
		}
		if len(got) != len(wantFrames) {
			t.Fatalf("split stream: %d frames then %v; whole stream: %d frames then %v", len(got), err, len(wantFrames), wantErr)
		}
		if !sameOutcome(err, wantErr) {
			t.Fatalf("split stream ended with %v, whole stream with %v", err, wantErr)
		}
		// At the end of the stream, a Reader keeps reporting the end: a
		// truncated frame is followed by io.EOF, not by a second frame.
		truncated := errors.Is(err, wire.ErrTruncated)
		if end != endBroken && (errors.Is(err, io.EOF) || truncated) {
			if _, err := r.ReadFrame(); !errors.Is(err, io.EOF) {
				t.Fatalf("after %v: got %v, want io.EOF", wantErr, err)
			}
		}
	})
}

// checkShortRead checks the error of a handshake read from n < want bytes.
func checkShortRead(t *testing.T, what string, n int, err error) {
	t.Helper()
	want := io.ErrUnexpectedEOF
	if n == 0 {
		want = io.EOF
	}
	if !errors.Is(err, want) || errors.Is(err, wire.ErrHandshakeVersion) {
		t.Fatalf("%s from %d bytes: got %v, want %v", what, n, err, want)
	}
}

// FuzzHandshakeRead feeds arbitrary bytes to the handshake readers
// (ReadServerHello, ReadClientAuth, ReadSessionID), both whole and one byte
// at a time, and checks their errors and that what they accept re-encodes
// to the same bytes. A parsed ClientAuth's Verify must agree with ed25519
// over the documented signed message.
func FuzzHandshakeRead(f *testing.F) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	var nonce [wire.NonceLen]byte
	certHash := sha256.Sum256([]byte("seed certificate"))
	auth := wire.SignAuth(key, nonce, certHash).Append(nil)
	f.Add(auth)
	f.Add(auth[:wire.ClientAuthLen-1])
	f.Add(append(append([]byte{}, auth...), 0xee))
	f.Add(append([]byte{2}, auth[1:]...))
	f.Add(wire.ServerHello{Nonce: nonce}.Append(nil))
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		readers := map[string]func() io.Reader{
			"whole":    func() io.Reader { return bytes.NewReader(data) },
			"bytewise": func() io.Reader { return iotest.OneByteReader(iotest.DataErrReader(bytes.NewReader(data))) },
		}
		for name, reader := range readers {
			h, err := wire.ReadServerHello(reader())
			switch {
			case len(data) < wire.ServerHelloLen:
				checkShortRead(t, name+" server hello", len(data), err)
			case data[0] != wire.Version:
				if !errors.Is(err, wire.ErrHandshakeVersion) {
					t.Fatalf("%s server hello, version 0x%02x: got %v", name, data[0], err)
				}
			case err != nil:
				t.Fatalf("%s server hello: %v", name, err)
			case !bytes.Equal(h.Append(nil), data[:wire.ServerHelloLen]):
				t.Fatalf("%s server hello re-encodes to % x", name, h.Append(nil))
			}

			a, err := wire.ReadClientAuth(reader())
			switch {
			case len(data) < wire.ClientAuthLen:
				checkShortRead(t, name+" client auth", len(data), err)
			case data[0] != wire.Version:
				if !errors.Is(err, wire.ErrHandshakeVersion) {
					t.Fatalf("%s client auth, version 0x%02x: got %v", name, data[0], err)
				}
			case err != nil:
				t.Fatalf("%s client auth: %v", name, err)
			default:
				enc := a.Append(nil)
				if len(enc) != wire.ClientAuthLen || !bytes.Equal(enc, data[:wire.ClientAuthLen]) {
					t.Fatalf("%s client auth re-encodes to % x", name, enc)
				}
				if &a.PublicKey[0] == &data[1] || &a.Signature[0] == &data[1+ed25519.PublicKeySize] {
					t.Fatalf("%s client auth aliases the input", name)
				}
				// Arbitrary key and signature: Verify must agree with
				// ed25519 over the documented message.
				var n [wire.NonceLen]byte
				copy(n[:], data[wire.ClientAuthLen:])
				var ch [sha256.Size]byte
				copy(ch[:], data[min(len(data), wire.ClientAuthLen+wire.NonceLen):])
				checkVerify(t, a, n, ch)
			}

			id, err := wire.ReadSessionID(reader())
			switch {
			case len(data) < wire.SessionIDLen:
				checkShortRead(t, name+" session id", len(data), err)
			case err != nil:
				t.Fatalf("%s session id: %v", name, err)
			case !bytes.Equal(wire.AppendSessionID(nil, id), data[:wire.SessionIDLen]):
				t.Fatalf("%s session id %d re-encodes to % x", name, id, wire.AppendSessionID(nil, id))
			}
		}
	})
}

// checkVerify checks a.Verify against ed25519.Verify over the message
// docs/protocol.md specifies: the context, the nonce, the certificate hash.
// It reports whether Verify accepted.
func checkVerify(t *testing.T, a wire.ClientAuth, nonce [wire.NonceLen]byte, certHash [sha256.Size]byte) bool {
	t.Helper()
	msg := append(append([]byte("tlsgate-auth-v1\x00"), nonce[:]...), certHash[:]...)
	want := len(a.PublicKey) == ed25519.PublicKeySize && ed25519.Verify(a.PublicKey, msg, a.Signature)
	err := a.Verify(nonce, certHash)
	if err != nil && !errors.Is(err, wire.ErrHandshakeSignature) {
		t.Fatalf("Verify: %v, want nil or ErrHandshakeSignature", err)
	}
	// Verify refuses small-order keys (TestFuzzFindingSmallOrderKey): it
	// may refuse what ed25519 accepts, but never the other way round.
	if err == nil && !want {
		t.Fatalf("Verify(key % x, sig % x) = %v; ed25519 says %v", a.PublicKey, a.Signature, err, want)
	}
	return err == nil
}

// FuzzVerify signs with a key, nonce and certificate hash from the fuzzer,
// checks that the signature verifies, and that flipping any one bit of the
// public key, signature, nonce or hash makes it fail. It also verifies an
// arbitrary key and signature, which must never panic and must agree with
// ed25519.
func FuzzVerify(f *testing.F) {
	f.Add(bytes.Repeat([]byte{1}, 32), []byte("nonce"), []byte("cert"), uint16(0), []byte{}, []byte{})
	f.Add([]byte{}, []byte{}, []byte{}, uint16(8*32+8*64-1), bytes.Repeat([]byte{0}, 32), bytes.Repeat([]byte{0}, 64))
	f.Add([]byte("seed"), bytes.Repeat([]byte{0xff}, 32), bytes.Repeat([]byte{0xff}, 32), uint16(1279), bytes.Repeat([]byte{1}, 33), bytes.Repeat([]byte{1}, 63))
	f.Fuzz(func(t *testing.T, seed, nonceB, hashB []byte, flip uint16, pub, sig []byte) {
		var s [ed25519.SeedSize]byte
		copy(s[:], seed)
		key := ed25519.NewKeyFromSeed(s[:])
		var nonce [wire.NonceLen]byte
		copy(nonce[:], nonceB)
		var certHash [sha256.Size]byte
		copy(certHash[:], hashB)

		a := wire.SignAuth(key, nonce, certHash)
		if !checkVerify(t, a, nonce, certHash) {
			t.Fatal("a SignAuth signature does not verify")
		}
		if id := wire.SessionID(a.PublicKey); id>>63 != 0 {
			t.Fatalf("session id %d has the top bit set", id)
		}
		read, err := wire.ReadClientAuth(bytes.NewReader(a.Append(nil)))
		if err != nil || !checkVerify(t, read, nonce, certHash) {
			t.Fatalf("ClientAuth after Append and ReadClientAuth: %v", err)
		}

		// One flipped bit anywhere must fail.
		bad := wire.ClientAuth{PublicKey: bytes.Clone(a.PublicKey), Signature: bytes.Clone(a.Signature)}
		badNonce, badHash := nonce, certHash
		const bits = 8 * (ed25519.PublicKeySize + ed25519.SignatureSize + wire.NonceLen + sha256.Size)
		bit := int(flip) % bits
		field := []byte(nil)
		switch i := bit / 8; {
		case i < ed25519.PublicKeySize:
			field = bad.PublicKey
		case i < ed25519.PublicKeySize+ed25519.SignatureSize:
			field, bit = bad.Signature, bit-8*ed25519.PublicKeySize
		case i < ed25519.PublicKeySize+ed25519.SignatureSize+wire.NonceLen:
			field, bit = badNonce[:], bit-8*(ed25519.PublicKeySize+ed25519.SignatureSize)
		default:
			field, bit = badHash[:], bit-8*(ed25519.PublicKeySize+ed25519.SignatureSize+wire.NonceLen)
		}
		field[bit/8] ^= 1 << (bit % 8)
		if checkVerify(t, bad, badNonce, badHash) {
			t.Fatalf("verifies with bit %d flipped (of %d)", int(flip)%bits, bits)
		}
		// A signature or key one byte short or long must fail.
		for _, c := range []wire.ClientAuth{
			{PublicKey: a.PublicKey, Signature: a.Signature[:len(a.Signature)-1]},
			{PublicKey: a.PublicKey, Signature: append(bytes.Clone(a.Signature), 0)},
			{PublicKey: a.PublicKey[:len(a.PublicKey)-1], Signature: a.Signature},
			{PublicKey: append(bytes.Clone(a.PublicKey), 0), Signature: a.Signature},
		} {
			if checkVerify(t, c, nonce, certHash) {
				t.Fatalf("verifies with a %d-byte key and a %d-byte signature", len(c.PublicKey), len(c.Signature))
			}
		}

		// Arbitrary key and signature, of any length. One that verifies
		// must be bound to the nonce: it fails for any other.
		arb := wire.ClientAuth{PublicKey: pub, Signature: sig}
		if checkVerify(t, arb, nonce, certHash) {
			other := nonce
			for i := range other {
				other[i] ^= 0xff
			}
			if checkVerify(t, arb, other, certHash) {
				t.Fatalf("key % x and signature % x verify for two nonces", pub, sig)
			}
		}
		checkVerify(t, wire.ClientAuth{PublicKey: a.PublicKey, Signature: sig}, nonce, certHash)
	})
}

// checkDecode decodes data in enc. A failure must wrap ErrBadPayload; a
// success must survive Marshal and a second decode unchanged, and marshal
// to the same bytes again.
func checkDecode[T comparable](t *testing.T, name string, enc wire.Encoding, data []byte, decode func(wire.Encoding, []byte) (T, error)) {
	t.Helper()
	v, err := decode(enc, data)
	if err != nil {
		if !errors.Is(err, wire.ErrBadPayload) {
			t.Fatalf("%s %s: %v does not wrap ErrBadPayload", enc, name, err)
		}
		return
	}
	if !enc.Valid() {
		t.Fatalf("%s %s decoded %+v", enc, name, v)
	}
	b, err := wire.Marshal(enc, v)
	if err != nil {
		t.Fatalf("%s %s: Marshal(%+v): %v", enc, name, v, err)
	}
	v2, err := decode(enc, b)
	if err != nil || v2 != v {
		t.Fatalf("%s %s: %+v marshals to %q, which decodes to %+v, %v", enc, name, v, b, v2, err)
	}
	if b2, err := wire.Marshal(enc, v2); err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("%s %s: %+v marshals to %q, then to %q, %v", enc, name, v, b, b2, err)
	}
}

// FuzzDecodeControl decodes arbitrary bytes as each control payload, in
// JSON and MessagePack (the low bit of enc) and in the reserved encodings.
func FuzzDecodeControl(f *testing.F) {
	for _, enc := range []wire.Encoding{wire.JSON, wire.MsgPack} {
		for _, v := range []any{
			wire.FlushPayload{Seq: 1<<64 - 1},
			wire.PingPayload{Nonce: 42},
			wire.ResumePayload{Epoch: "5f1c0a9e3b7d2468", Seq: 1<<64 - 1},
			wire.ResumedPayload{Epoch: "", Seq: 7, Resumed: true},
			wire.AckPayload{Seq: 3},
			wire.GoodbyePayload{Code: wire.GoodbyeServerShutdown, Reason: "draining", Reconnect: true},
			wire.ErrorPayload{Error: "bad", PktType: -1 << 63, Code: wire.CodeBadPayload},
			map[string]any{"seq": nil, "nonce": -1, "code": 5, "extra": []any{1.5, "x", map[string]any{}}},
		} {
			b, err := wire.Marshal(enc, v)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(enc), b)
		}
	}
	f.Add(uint8(wire.JSON), []byte(`{"code":"\ud800\xff","reason":"é","reconnect":true,"seq":1e3}`))
	f.Add(uint8(wire.JSON), []byte(`{"seq":18446744073709551616,"nonce":-1,"pkt_type":1e400}`))
	f.Add(uint8(wire.JSON), []byte(`null`))
	f.Add(uint8(wire.JSON), []byte(`{"Nonce": 9, "SEQ": 1}`))                                                                     // keys match exactly
	f.Add(uint8(wire.JSON), []byte(`{"seq": 1, "seq": 2, "nonce": 3}`))                                                           // a duplicate key
	f.Add(uint8(wire.MsgPack), []byte{0x82, 0xa3, 's', 'e', 'q', 0x01, 0xa3, 's', 'e', 'q', 0x02})                                // a duplicate key
	f.Add(uint8(wire.MsgPack), []byte{0x81, 0xa5, 'n', 'o', 'n', 'c', 'e', 0xd0, 0x05})                                           // nonce: int8 5
	f.Add(uint8(wire.MsgPack), []byte{0x81, 0xa5, 'n', 'o', 'n', 'c', 'e', 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}) // nonce: int64 -2
	f.Add(uint8(wire.MsgPack), []byte{0x93, 0xa1, 'c', 0xa1, 'r', 0xc3})                                                          // a struct as an array
	f.Add(uint8(wire.MsgPack), []byte{0x81, 0xa3, 's', 'e', 'q', 0xcb, 0x40, 0x45, 0, 0, 0, 0, 0, 0})                             // seq: 42.0
	f.Add(uint8(wire.MsgPack), []byte{0x82, 0xa4, 'c', 'o', 'd', 'e', 0xc4, 1, 0xff, 0xa8, 'p', 'k', 't', '_', 't', 'y', 'p', 'e', 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(wire.MsgPack), []byte{0xdb, 0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(wire.MsgPack), []byte{0xc1})
	f.Add(uint8(wire.MsgPack), []byte{})
	f.Fuzz(func(t *testing.T, encByte uint8, data []byte) {
		for _, enc := range []wire.Encoding{wire.Encoding(encByte & 1), wire.Encoding(2 + encByte&1)} {
			if enc == wire.MsgPack {
				// The length check must agree with msgpack itself. A fresh
				// Decoder (not msgpack.Unmarshal's pooled one) allocates at
				// most 1 MiB for an overlong length.
				fit := msgpackLengthsFit(data)
				if err := msgpack.NewDecoder(bytes.NewReader(data)).Skip(); fit != (err == nil) {
					t.Fatalf("msgpackLengthsFit(%q) = %v, but msgpack's Skip says %v", data, fit, err)
				}
			}
			checkDecode(t, "flush", enc, data, wire.DecodeFlush)
			checkDecode(t, "ping", enc, data, wire.DecodePing)
			checkDecode(t, "goodbye", enc, data, wire.DecodeGoodbye)
			checkDecode(t, "error", enc, data, wire.DecodeError)
			checkDecode(t, "resume", enc, data, wire.DecodeResume)
			checkDecode(t, "resumed", enc, data, wire.DecodeResumed)
			checkDecode(t, "ack", enc, data, wire.DecodeAck)
		}
	})
}

// msgpackLengthsFit is the product's own length check (control.go).
func msgpackLengthsFit(b []byte) bool { return wire.CheckMsgPack(b) == nil }

// TestFuzzFindingMsgPackOverlongLength is FuzzDecodeControl's first finding.
// A MessagePack payload that declares a str, bin or ext longer than itself
// (8 bytes announcing 4 GiB) makes msgpack.Unmarshal allocate up to 1 MiB
// before it fails, and the pooled msgpack.Decoder keeps the grown buffer:
// the next such payload appends to it, so each call allocates more than the
// last. A few dozen 8-byte control payloads (a peer's Flush, Ping or
// Goodbye) take the process to "fatal error: out of memory". Decoding a
// short payload must allocate little, however long it claims to be.
func TestFuzzFindingMsgPackOverlongLength(t *testing.T) {
	payloads := [][]byte{
		{0x81, 0xa1, 'x', 0xc6, 0xff, 0xff, 0xff, 0xff},                 // {"x": bin32 of 4 GiB}
		{0x81, 0xa4, 'c', 'o', 'd', 'e', 0xdb, 0xff, 0xff, 0xff, 0xff},  // {"code": str32 of 4 GiB}
		{0x81, 0xa3, 's', 'e', 'q', 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}, // {"seq": ext32 of 4 GiB}
		{0x91, 0xda, 0xff, 0xff},                                        // [str16 of 64 KiB], a struct as an array
	}
	decoders := map[string]func(wire.Encoding, []byte) error{
		"flush":   func(e wire.Encoding, b []byte) error { _, err := wire.DecodeFlush(e, b); return err },
		"ping":    func(e wire.Encoding, b []byte) error { _, err := wire.DecodePing(e, b); return err },
		"goodbye": func(e wire.Encoding, b []byte) error { _, err := wire.DecodeGoodbye(e, b); return err },
		"error":   func(e wire.Encoding, b []byte) error { _, err := wire.DecodeError(e, b); return err },
	}
	const maxAlloc = 64 << 10
	var before, after runtime.MemStats
	for i := range 50 {
		for _, p := range payloads {
			if msgpackLengthsFit(p) {
				t.Fatalf("msgpackLengthsFit(% x) = true", p)
			}
			for name, decode := range decoders {
				runtime.ReadMemStats(&before)
				err := decode(wire.MsgPack, p)
				runtime.ReadMemStats(&after)
				if !errors.Is(err, wire.ErrBadPayload) {
					t.Fatalf("%s % x: %v, want ErrBadPayload", name, p, err)
				}
				if n := after.TotalAlloc - before.TotalAlloc; n > maxAlloc {
					t.Fatalf("call %d: %s of %d bytes (% x) allocated %d bytes, want at most %d", i, name, len(p), p, n, maxAlloc)
				}
			}
		}
	}
}

// TestFuzzFindingMsgPackExtWrappedMap is FuzzDecodeControl's finding of
// December 2026: the MessagePack library reads an extension in front of a
// map as a wrapper around it, so an ext whose opaque body the length check
// had skipped led the decoder into a map32 key claiming 3 billion entries,
// and it built a map of that size (10 s and gigabytes for a 28-byte Flush).
// Such payloads are refused at once, with little allocated, and a value
// that is a map, array or extension is named in the error.
func TestFuzzFindingMsgPackExtWrappedMap(t *testing.T) {
	for _, c := range []struct {
		payload []byte
		want    string
	}{
		// ext8 of 2 bytes around fixmap(8), whose first key is a map32 of 0xbaa4c072 entries
		{[]byte{0xc7, 0x02, 0x99, 0x88, 0xdf, 0xba, 0xa4, 0xc0, 0x72, 0x07, 0x92}, "want a MessagePack map"},
		// {ext: ...} as a key
		{[]byte{0x81, 0xd4, 0x01, 0x81, 0xa3, 's', 'e', 'q', 0x01}, "want string keys"},
		// {"seq": ext8 around map32 of 0xbaa4c072 entries}
		{[]byte{0x81, 0xa3, 's', 'e', 'q', 0xc7, 0x05, 0x01, 0xdf, 0xba, 0xa4, 0xc0, 0x72}, `"seq": want a non-negative integer, got an extension`},
		{[]byte{0x81, 0xa3, 's', 'e', 'q', 0x80}, `"seq": want a non-negative integer, got a map`},
		{[]byte{0x81, 0xa3, 's', 'e', 'q', 0x90}, `"seq": want a non-negative integer, got an array`},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := wire.DecodeFlush(wire.MsgPack, c.payload)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, wire.ErrBadPayload) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("% x: %v, want ErrBadPayload saying %q", c.payload, err, c.want)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
			t.Errorf("% x: allocated %d bytes, want at most 64 KiB", c.payload, n)
		}
	}
}

// TestFuzzFindingSmallOrderKey: Verify accepts the same key and signature
// for every nonce and certificate when the public key is a small-order
// point, such as the identity (0x01 followed by zeros, or one of its other
// encodings) with the signature R = identity, S = 0. crypto/ed25519 checks
// [S]B = R + [k]A, which holds for any k when A is the identity. So anyone
// can complete the handshake as these identities without a private key, and
// the signature binds neither the nonce nor the server certificate. No real
// client's identity is exposed (its key is not of small order), but these
// session IDs are free for all to take over.
func TestFuzzFindingSmallOrderKey(t *testing.T) {
	identitySig := make([]byte, ed25519.SignatureSize)
	identitySig[0] = 1 // R = the identity, S = 0
	zeroSig := make([]byte, ed25519.SignatureSize)
	for _, c := range []struct{ key, why string }{
		{"0100000000000000000000000000000000000000000000000000000000000000", "the identity"},
		{"0100000000000000000000000000000000000000000000000000000000000080", "the identity, sign bit set"},
		{"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", "the identity, y = p + 1"},
		{"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "the identity, y = p + 1, sign bit set"},
		{"0000000000000000000000000000000000000000000000000000000000000000", "y = 0, of order 4 (FuzzVerify found it)"},
	} {
		pub := unhex(t, c.key)
		for i := range 64 {
			nonce := [wire.NonceLen]byte{byte(i)}
			certHash := sha256.Sum256([]byte{byte(i)})
			for _, sig := range [][]byte{identitySig, zeroSig} {
				if err := (wire.ClientAuth{PublicKey: pub, Signature: sig}).Verify(nonce, certHash); err == nil {
					t.Fatalf("key %s (%s): signature %x, made without a private key, verifies (nonce %d)", c.key, c.why, sig, i)
				}
			}
		}
	}
}

// TestFuzzFindingTruncatedPayloadStaysBuffered: FuzzFrameReader found (in
// 2 s) that ReadFrame's Peek fast path, for payloads that fit the bufio
// buffer, returns ErrTruncated but leaves the truncated payload's bytes in
// the buffer. The next ReadFrame decodes them as frames: here a frame that
// was only ever part of another frame's payload. After ErrTruncated the
// stream is over; a Reader must report io.EOF from then on.
func TestFuzzFindingTruncatedPayloadStaysBuffered(t *testing.T) {
	inner := wire.AppendFrame(nil, wire.TypeData, wire.JSON, []byte(`"hi"`))
	h := wire.Header(wire.TypeData, wire.JSON, 100)
	stream := append(h[:], inner...) // declares 100 payload bytes, then ends
	r := wire.NewReader(bufio.NewReader(bytes.NewReader(stream)), wire.MaxPayload)
	if _, err := r.ReadFrame(); !errors.Is(err, wire.ErrTruncated) {
		t.Fatalf("first frame: %v, want ErrTruncated", err)
	}
	if f, err := r.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("after ErrTruncated: %s frame %q, %v; want io.EOF", f.Type, f.Payload, err)
	}
}
