package wire_test

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tlsgate/tlsgate/wire"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHandshakeVector checks the test vector published in docs/protocol.md.
func TestHandshakeVector(t *testing.T) {
	key := ed25519.NewKeyFromSeed(unhex(t, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"))
	var nonce [wire.NonceLen]byte
	copy(nonce[:], unhex(t, "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"))
	certHash := sha256.Sum256([]byte("example certificate DER"))
	auth := wire.SignAuth(key, nonce, certHash)
	wantSig := "c6cbf21f98aaa9d7a4ec6607ad5accc0bff5c43766ad7503e79af7651bfc7f2e" +
		"77b88672d8d499bb4bcb6c17e07057a859d8e78bfe5bd5e06dbd0f7fc1e1910f"
	if got := hex.EncodeToString(auth.Signature); got != wantSig {
		t.Fatalf("signature %s, want %s", got, wantSig)
	}
	if id := wire.SessionID(auth.PublicKey); id != 6217037485330089804 {
		t.Fatalf("session id %d", id)
	}
	msg := auth.Append(nil)
	if len(msg) != wire.ClientAuthLen {
		t.Fatalf("ClientAuth is %d bytes", len(msg))
	}
	read, err := wire.ReadClientAuth(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if err := read.Verify(nonce, certHash); err != nil {
		t.Fatal(err)
	}
	other := certHash
	other[0] ^= 1
	if err := read.Verify(nonce, other); !errors.Is(err, wire.ErrHandshakeSignature) {
		t.Fatalf("verify over another certificate: %v", err)
	}
	masked := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))
	if id := wire.SessionID(masked.Public().(ed25519.PublicKey)); id != 3904205809729616638 {
		t.Fatalf("masked session id %d", id)
	}
	msg[0] = 2
	if _, err := wire.ReadClientAuth(bytes.NewReader(msg)); !errors.Is(err, wire.ErrHandshakeVersion) {
		t.Fatalf("bad version: %v", err)
	}
}

func TestFrameRoundTripAndErrors(t *testing.T) {
	var stream []byte
	stream = wire.AppendFrame(stream, wire.TypeData, wire.JSON, []byte(`"hello"`))
	stream = wire.AppendFrame(stream, wire.TypeData, wire.MsgPack, nil)
	stream = wire.AppendFrame(stream, wire.TypePong, wire.MsgPack, bytes.Repeat([]byte{1}, 100))
	if !bytes.HasPrefix(stream, unhex(t, "0101000722")) {
		t.Fatalf("first frame % x", stream[:5])
	}
	r := wire.NewReader(bufio.NewReader(bytes.NewReader(stream)), 100)
	for _, want := range []wire.Frame{
		{Type: wire.TypeData, Encoding: wire.JSON, Payload: []byte(`"hello"`)},
		{Type: wire.TypeData, Encoding: wire.MsgPack, Payload: []byte{}},
		{Type: wire.TypePong, Encoding: wire.MsgPack, Payload: bytes.Repeat([]byte{1}, 100)},
	} {
		f, err := r.ReadFrame()
		if err != nil || f.Type != want.Type || f.Encoding != want.Encoding || !bytes.Equal(f.Payload, want.Payload) {
			t.Fatalf("got %+v, %v; want %+v", f, err, want)
		}
	}
	if _, err := r.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}

	for name, c := range map[string]struct {
		in    []byte
		check func(error) bool
	}{
		"bad version":       {[]byte{2, 1, 0, 0}, func(err error) bool { var fe *wire.FramingError; return errors.As(err, &fe) }},
		"reserved encoding": {[]byte{1, 0x81, 0, 0}, func(err error) bool { var fe *wire.FramingError; return errors.As(err, &fe) }},
		"too large": {[]byte{1, 0x41, 0, 101}, func(err error) bool {
			var tl *wire.TooLargeError
			return errors.As(err, &tl) && tl.Type == wire.TypeData && tl.Encoding == wire.MsgPack && tl.Len == 101
		}},
		"truncated header":  {[]byte{1, 1}, func(err error) bool { return errors.Is(err, wire.ErrTruncated) }},
		"truncated payload": {[]byte{1, 1, 0, 5, 'a'}, func(err error) bool { return errors.Is(err, wire.ErrTruncated) }},
	} {
		_, err := wire.NewReader(bufio.NewReader(bytes.NewReader(c.in)), 100).ReadFrame()
		if !c.check(err) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func TestControlPayloads(t *testing.T) {
	for _, enc := range []wire.Encoding{wire.JSON, wire.MsgPack} {
		b, err := wire.Marshal(enc, wire.FlushPayload{Seq: 1 << 60})
		if err != nil {
			t.Fatal(err)
		}
		if p, err := wire.DecodeFlush(enc, b); err != nil || p.Seq != 1<<60 {
			t.Fatalf("%s flush: %+v %v", enc, p, err)
		}
		b, _ = wire.Marshal(enc, wire.GoodbyePayload{Code: wire.GoodbyeServerShutdown, Reason: "r", Reconnect: true})
		if p, err := wire.DecodeGoodbye(enc, b); err != nil || p != (wire.GoodbyePayload{Code: wire.GoodbyeServerShutdown, Reason: "r", Reconnect: true}) {
			t.Fatalf("%s goodbye: %+v %v", enc, p, err)
		}
		for _, bad := range [][]byte{nil, []byte("{"), {0xc1}} {
			if _, err := wire.DecodePing(enc, bad); !errors.Is(err, wire.ErrBadPayload) {
				t.Fatalf("%s ping %q: %v", enc, bad, err)
			}
		}
		empty, _ := wire.Marshal(enc, map[string]int{})
		if _, err := wire.DecodeFlush(enc, empty); !errors.Is(err, wire.ErrBadPayload) {
			t.Fatalf("%s flush without seq: %v", enc, err)
		}
	}
	if _, err := wire.Marshal(wire.Encoding(2), wire.PingPayload{}); err == nil {
		t.Fatal("marshal in a reserved encoding must fail")
	}
}

// TestReadFramePayloads: ReadFrame's payloads are the caller's, and an
// append to one cannot reach the next; ReadFrameBorrowed's are right until
// the next call, capped as well, and cost no allocation, including a
// payload larger than the bufio buffer.
func TestReadFramePayloads(t *testing.T) {
	var stream []byte
	var want [][]byte
	for i := range 50 {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, i%13)
		if i == 25 {
			p = bytes.Repeat([]byte{'z'}, 100) // over the 16-byte buffer below
		}
		want = append(want, p)
		stream = wire.AppendFrame(stream, wire.TypeData, wire.JSON, p)
	}
	t.Run("owned", func(t *testing.T) {
		r := wire.NewReader(bufio.NewReaderSize(bytes.NewReader(stream), 16), wire.MaxPayload)
		var got [][]byte
		for range want {
			f, err := r.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, f.Payload)
			_ = append(f.Payload, "clobber"...) // must not touch the next payload
		}
		for i, p := range want {
			if !bytes.Equal(got[i], p) {
				t.Fatalf("payload %d = %q, want %q", i, got[i], p)
			}
		}
	})
	t.Run("borrowed", func(t *testing.T) {
		src := bytes.NewReader(stream)
		br := bufio.NewReaderSize(src, 16)
		r := wire.NewReader(br, wire.MaxPayload)
		allocs := testing.AllocsPerRun(3, func() { // after a warm-up run
			src.Reset(stream)
			br.Reset(src)
			for i, p := range want {
				f, err := r.ReadFrameBorrowed()
				if err != nil || !bytes.Equal(f.Payload, p) {
					t.Fatalf("payload %d = %q, %v; want %q", i, f.Payload, err, p)
				}
				if cap(f.Payload) != len(f.Payload) {
					t.Fatalf("payload %d: capacity %d beyond its length %d", i, cap(f.Payload), len(f.Payload))
				}
			}
		})
		if allocs != 0 {
			t.Fatalf("%v allocations reading %d borrowed frames", allocs, len(want))
		}
	})
}

// TestControlPayloadRules: the rules of docs/protocol.md §4, in both
// encodings: keys match exactly, a key appears once, integers are
// non-negative whatever their MessagePack format, and errors say which
// field and what was wanted, without Go's words.
func TestControlPayloadRules(t *testing.T) {
	mp := func(v any) []byte {
		t.Helper()
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// msgpack with the keys in this order, the values as given.
	mpMap := func(kv ...any) []byte {
		t.Helper()
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		if err := enc.EncodeMapLen(len(kv) / 2); err != nil {
			t.Fatal(err)
		}
		for _, x := range kv {
			if err := enc.Encode(x); err != nil {
				t.Fatal(err)
			}
		}
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name string
		enc  wire.Encoding
		b    []byte
		want string // "" for a payload that decodes
		ping uint64
	}{
		{"exact key", wire.JSON, []byte(`{"nonce": 9}`), "", 9},
		{"other case is another key", wire.JSON, []byte(`{"Nonce": 9}`), `missing field "nonce"`, 0},
		{"duplicate key", wire.JSON, []byte(`{"nonce": 1, "nonce": 2}`), `key "nonce" appears more than once`, 0},
		{"duplicate unknown key", wire.JSON, []byte(`{"nonce": 1, "x": 1, "x": 2}`), `key "x" appears more than once`, 0},
		{"unknown key ignored", wire.JSON, []byte(`{"extra": [1, {"a": null}], "nonce": 3}`), "", 3},
		{"negative", wire.JSON, []byte(`{"nonce": -1}`), `"nonce": want a non-negative integer, got -1`, 0},
		{"float", wire.JSON, []byte(`{"nonce": 1.0}`), `"nonce": want a non-negative integer, got 1.0`, 0},
		{"exponent", wire.JSON, []byte(`{"nonce": 1e3}`), `"nonce": want a non-negative integer, got 1e3`, 0},
		{"string", wire.JSON, []byte(`{"nonce": "7"}`), `"nonce": want a non-negative integer, got "7"`, 0},
		{"too big", wire.JSON, []byte(`{"nonce": 18446744073709551616}`), `"nonce": want a non-negative integer below 2^64`, 0},
		{"largest", wire.JSON, []byte(`{"nonce": 18446744073709551615}`), "", 1<<64 - 1},
		{"not an object", wire.JSON, []byte(`[1]`), "want a JSON object", 0},
		{"trailing", wire.JSON, []byte(`{"nonce": 1} {}`), "more after the JSON object", 0},
		{"msgpack exact key", wire.MsgPack, mp(map[string]any{"nonce": uint64(5)}), "", 5},
		{"msgpack other case", wire.MsgPack, mp(map[string]any{"NONCE": uint64(5)}), `missing field "nonce"`, 0},
		{"msgpack signed positive", wire.MsgPack, mpMap("nonce", int64(300)), "", 300},
		{"msgpack int8 positive", wire.MsgPack, mpMap("nonce", int8(7)), "", 7},
		{"msgpack negative", wire.MsgPack, mpMap("nonce", int64(-2)), `"nonce": want a non-negative integer, got -2`, 0},
		{"msgpack negative fixint", wire.MsgPack, mpMap("nonce", int8(-1)), `"nonce": want a non-negative integer, got -1`, 0},
		{"msgpack float", wire.MsgPack, mpMap("nonce", 2.5), `"nonce": want a non-negative integer, got a float`, 0},
		{"msgpack duplicate", wire.MsgPack, mpMap("nonce", uint8(1), "nonce", uint8(2)), `key "nonce" appears more than once`, 0},
		{"msgpack not a map", wire.MsgPack, mp([]any{1}), "want a MessagePack map", 0},
		{"msgpack int key", wire.MsgPack, mpMap(int8(1), uint8(2)), "want string keys", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := wire.DecodePing(tc.enc, tc.b)
			if tc.want == "" {
				if err != nil || p.Nonce != tc.ping {
					t.Fatalf("DecodePing(%q) = %+v, %v; want nonce %d", tc.b, p, err, tc.ping)
				}
				return
			}
			if !errors.Is(err, wire.ErrBadPayload) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodePing(%q): %v, want ErrBadPayload saying %q", tc.b, err, tc.want)
			}
			for _, goWords := range []string{"json:", "msgpack:", "Go value", "unmarshal"} {
				if strings.Contains(err.Error(), goWords) {
					t.Errorf("the error %q leaks %q", err, goWords)
				}
			}
		})
	}
	// Goodbye and Error fields are typed too.
	if _, err := wire.DecodeGoodbye(wire.JSON, []byte(`{"reconnect": "yes"}`)); err == nil || !strings.Contains(err.Error(), `"reconnect": want true or false, got "yes"`) {
		t.Errorf("Goodbye with a string reconnect: %v", err)
	}
	if _, err := wire.DecodeError(wire.JSON, []byte(`{"pkt_type": 300}`)); err == nil || !strings.Contains(err.Error(), `"pkt_type": want a packet type, 0 to 255, got 300`) {
		t.Errorf("Error with pkt_type 300: %v", err)
	}
	if g, err := wire.DecodeGoodbye(wire.JSON, []byte(`{"code": "normal", "reason": "bye", "reconnect": true}`)); err != nil || g != (wire.GoodbyePayload{Code: "normal", Reason: "bye", Reconnect: true}) {
		t.Errorf("Goodbye: %+v, %v", g, err)
	}
}

// TestResumePayloads: the resume extension's payloads follow the v1 rules
// (exact keys, non-negative integers) and every field is required, so that
// a client cannot resume by accident with a half-written Resume.
func TestResumePayloads(t *testing.T) {
	for _, enc := range []wire.Encoding{wire.JSON, wire.MsgPack} {
		b, err := wire.Marshal(enc, wire.ResumePayload{Epoch: "00ff", Seq: 12})
		if err != nil {
			t.Fatal(err)
		}
		if r, err := wire.DecodeResume(enc, b); err != nil || r != (wire.ResumePayload{Epoch: "00ff", Seq: 12}) {
			t.Errorf("%s Resume: %+v, %v", enc, r, err)
		}
		b, _ = wire.Marshal(enc, wire.ResumedPayload{Epoch: "e", Seq: 3, Resumed: true})
		if r, err := wire.DecodeResumed(enc, b); err != nil || r != (wire.ResumedPayload{Epoch: "e", Seq: 3, Resumed: true}) {
			t.Errorf("%s Resumed: %+v, %v", enc, r, err)
		}
		b, _ = wire.Marshal(enc, wire.AckPayload{Seq: 1<<64 - 1})
		if a, err := wire.DecodeAck(enc, b); err != nil || a.Seq != 1<<64-1 {
			t.Errorf("%s Ack: %+v, %v", enc, a, err)
		}
	}
	for _, tc := range []struct {
		name   string
		decode func([]byte) error
		b      string
		want   string
	}{
		{"resume without epoch", resumeErr, `{"seq": 0}`, `missing field "epoch"`},
		{"resume without seq", resumeErr, `{"epoch": ""}`, `missing field "seq"`},
		{"resume epoch not a string", resumeErr, `{"epoch": 5, "seq": 0}`, `"epoch": want a string`},
		{"resume negative seq", resumeErr, `{"epoch": "", "seq": -1}`, `"seq": want a non-negative integer, got -1`},
		{"resume other case", resumeErr, `{"Epoch": "", "seq": 0}`, `missing field "epoch"`},
		{"resume epoch too long", resumeErr, `{"epoch": "` + strings.Repeat("a", wire.MaxEpochLen+1) + `", "seq": 0}`, `"epoch": want at most 64 bytes, got 65`},
		{"resumed without resumed", func(b []byte) error { _, err := wire.DecodeResumed(wire.JSON, b); return err }, `{"epoch": "", "seq": 0}`, `missing field "resumed"`},
		{"ack without seq", func(b []byte) error { _, err := wire.DecodeAck(wire.JSON, b); return err }, `{}`, `missing field "seq"`},
		{"ack float", func(b []byte) error { _, err := wire.DecodeAck(wire.JSON, b); return err }, `{"seq": 2.0}`, `"seq": want a non-negative integer, got 2.0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.decode([]byte(tc.b))
			if !errors.Is(err, wire.ErrBadPayload) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: %v, want ErrBadPayload saying %q", tc.b, err, tc.want)
			}
		})
	}
}

func resumeErr(b []byte) error {
	_, err := wire.DecodeResume(wire.JSON, b)
	return err
}
