package wire_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/wire"
)

// The resume examples of docs/protocol.md §15 are fenced blocks labelled
// resume-encodings and resume-example. In them, a frame is a line that
// starts at the left margin,
//
//	[client|server] Type [#n] [JSON|MessagePack]   payload
//
// followed by indented lines of hex bytes: the whole frame, header
// included. Lines starting with # are comments; "# connection" starts a
// new connection.

var (
	docFrameLine = regexp.MustCompile(`^(?:(client|server) +)?(Resume|Resumed|Ack|Data)(?: #(\d+))?(?: +(JSON|MessagePack))? +(\S.*)$`)
	docHexLine   = regexp.MustCompile(`^ +([0-9a-f]{2}(?: [0-9a-f]{2})*)$`)
)

// docFrame is one frame of an example block.
type docFrame struct {
	line   int    // in docs/protocol.md, for messages
	dir    string // "client", "server" or "" (no direction given)
	label  string // Resume, Resumed, Ack or Data
	num    uint64 // the "#n" of a Data, 0 if none
	enc    string // "JSON", "MessagePack" or "" (JSON)
	text   string // the payload as the doc shows it
	raw    []byte // the frame's bytes
	newCon bool   // the first frame after a "# connection" comment
}

// protocolDocBlock returns the lines of the fenced block labelled label in
// docs/protocol.md, and the line number of its first line.
func protocolDocBlock(t *testing.T, label string) ([]string, int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if l != "```"+label {
			continue
		}
		for j := i + 1; j < len(lines); j++ {
			if lines[j] == "```" {
				return lines[i+1 : j], i + 2
			}
		}
		t.Fatalf("docs/protocol.md: the %s block at line %d never ends", label, i+1)
	}
	t.Fatalf("docs/protocol.md has no fenced block labelled %s", label)
	return nil, 0
}

// parseDocFrames parses an example block into its frames.
func parseDocFrames(t *testing.T, label string) []docFrame {
	t.Helper()
	lines, first := protocolDocBlock(t, label)
	var frames []docFrame
	newCon := false
	for i, l := range lines {
		n := first + i
		switch {
		case strings.TrimSpace(l) == "":
		case strings.HasPrefix(l, "#"):
			if strings.HasPrefix(l, "# connection") {
				newCon = true
			}
		case docHexLine.MatchString(l):
			if len(frames) == 0 {
				t.Fatalf("docs/protocol.md:%d: hex bytes before any frame", n)
			}
			b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(l), " ", ""))
			if err != nil {
				t.Fatalf("docs/protocol.md:%d: %v", n, err)
			}
			f := &frames[len(frames)-1]
			f.raw = append(f.raw, b...)
		default:
			m := docFrameLine.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("docs/protocol.md:%d: neither a frame, hex bytes nor a comment: %q", n, l)
			}
			f := docFrame{line: n, dir: m[1], label: m[2], enc: m[4], text: strings.TrimSpace(m[5]), newCon: newCon}
			if m[3] != "" {
				f.num, _ = strconv.ParseUint(m[3], 10, 64)
			}
			newCon = false
			frames = append(frames, f)
		}
	}
	return frames
}

// decodeDocFrame decodes f's bytes with the wire package's own reader and
// control decoders, and checks them against the doc's line: exactly one
// frame, of the named type and encoding, whose payload is the text shown
// (for MessagePack: whose decoded value is the JSON shown), and which is
// byte for byte what wire.Marshal writes. It returns the decoded payload
// (a wire.*Payload, or the Data bytes).
func decodeDocFrame(t *testing.T, f docFrame) (wire.Frame, any) {
	t.Helper()
	r := wire.NewReader(bufio.NewReader(bytes.NewReader(f.raw)), wire.MaxPayload)
	fr, err := r.ReadFrame()
	if err != nil {
		t.Fatalf("docs/protocol.md:%d: %s frame % x: %v", f.line, f.label, f.raw, err)
	}
	if _, err := r.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("docs/protocol.md:%d: bytes after the %s frame (%v)", f.line, f.label, err)
	}
	if got, want := fr.Type.String(), strings.ToLower(f.label); got != want {
		t.Fatalf("docs/protocol.md:%d: the bytes are a %s frame, the text says %s", f.line, got, want)
	}
	enc := wire.JSON
	if f.enc == "MessagePack" {
		enc = wire.MsgPack
	}
	if fr.Encoding != enc {
		t.Fatalf("docs/protocol.md:%d: the bytes have encoding %s, the text says %s", f.line, fr.Encoding, enc)
	}
	var v any
	switch fr.Type {
	case wire.TypeData:
		if string(fr.Payload) != f.text {
			t.Fatalf("docs/protocol.md:%d: Data payload %q, the text says %q", f.line, fr.Payload, f.text)
		}
		return fr, fr.Payload
	case wire.TypeResume:
		v, err = wire.DecodeResume(fr.Encoding, fr.Payload)
	case wire.TypeResumed:
		v, err = wire.DecodeResumed(fr.Encoding, fr.Payload)
	case wire.TypeAck:
		v, err = wire.DecodeAck(fr.Encoding, fr.Payload)
	}
	if err != nil {
		t.Fatalf("docs/protocol.md:%d: %s payload % x: %v", f.line, f.label, fr.Payload, err)
	}
	asJSON, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(asJSON) != f.text {
		t.Fatalf("docs/protocol.md:%d: the bytes decode to %s, the text says %s", f.line, asJSON, f.text)
	}
	if enc == wire.JSON && string(fr.Payload) != f.text {
		t.Fatalf("docs/protocol.md:%d: JSON payload %s, the text says %s", f.line, fr.Payload, f.text)
	}
	want, err := wire.Marshal(enc, v)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fr.Payload, want) {
		t.Fatalf("docs/protocol.md:%d: payload % x, but wire.Marshal writes % x", f.line, fr.Payload, want)
	}
	return fr, v
}

// TestProtocolDocResumeEncodings checks the resume-encodings block of
// docs/protocol.md §15.2: each frame decodes to the payload shown, in the
// encoding shown, and is what tlsgate writes.
func TestProtocolDocResumeEncodings(t *testing.T) {
	t.Parallel()
	frames := parseDocFrames(t, "resume-encodings")
	seen := map[string]bool{}
	for _, f := range frames {
		if f.enc == "" || f.dir != "" || f.num != 0 {
			t.Fatalf("docs/protocol.md:%d: want \"Type Encoding payload\"", f.line)
		}
		decodeDocFrame(t, f)
		seen[f.label+" "+f.enc] = true
	}
	for _, typ := range []string{"Resume", "Resumed", "Ack"} {
		for _, enc := range []string{"JSON", "MessagePack"} {
			if !seen[typ+" "+enc] {
				t.Errorf("docs/protocol.md: the resume-encodings block lacks %s in %s", typ, enc)
			}
		}
	}
}

// TestProtocolDocResumeExample checks the worked example of docs/protocol.md
// §15.9: every frame decodes, with the wire package, to the type and
// payload its line shows, in JSON; and the exchange follows §15: each
// connection starts with the client's Resume and the server's Resumed; the
// numbers shown are the implicit ones (per direction and epoch, from 1,
// kept on a resume); Acks cover only what was sent; and a replayed Data is
// the one first sent with its number.
func TestProtocolDocResumeExample(t *testing.T) {
	t.Parallel()
	frames := parseDocFrames(t, "resume-example")
	if len(frames) == 0 || !frames[0].newCon {
		t.Fatal("docs/protocol.md: the resume-example block must start with a \"# connection\" comment")
	}

	type side struct {
		next uint64            // the number of the next Data it sends
		sent map[uint64]string // payload of each Data sent in the epoch
	}
	var (
		epoch          string
		client, server side
		resume         *wire.ResumePayload // this connection's Resume
		resumed        bool                // this connection's Resumed has arrived
		connections    int
		resumedTrue    bool
		replays        int
	)
	newEpoch := func(e string) {
		epoch = e
		client = side{next: 1, sent: map[uint64]string{}}
		server = side{next: 1, sent: map[uint64]string{}}
	}
	newEpoch("")

	for _, f := range frames {
		if f.enc != "" || (f.dir != "client" && f.dir != "server") {
			t.Fatalf("docs/protocol.md:%d: want \"client|server Type payload\", in JSON", f.line)
		}
		fr, v := decodeDocFrame(t, f)
		if f.newCon {
			connections++
			resume, resumed = nil, false
			if f.dir != "client" || fr.Type != wire.TypeResume {
				t.Fatalf("docs/protocol.md:%d: a connection starts with the client's Resume", f.line)
			}
		}
		if f.num != 0 && fr.Type != wire.TypeData {
			t.Fatalf("docs/protocol.md:%d: only Data is numbered here", f.line)
		}
		switch fr.Type {
		case wire.TypeResume:
			if f.dir != "client" || !f.newCon {
				t.Fatalf("docs/protocol.md:%d: Resume is only the client's first frame", f.line)
			}
			p := v.(wire.ResumePayload)
			resume = &p
			if p.Epoch != epoch {
				t.Fatalf("docs/protocol.md:%d: the Resume names epoch %q, the client's last Resumed said %q", f.line, p.Epoch, epoch)
			}
			if p.Epoch == "" && p.Seq != 0 {
				t.Fatalf("docs/protocol.md:%d: a fresh Resume has seq 0", f.line)
			}
			if p.Seq >= server.next {
				t.Fatalf("docs/protocol.md:%d: Resume seq %d, but the server sent only %d Data", f.line, p.Seq, server.next-1)
			}
			continue
		case wire.TypeResumed:
			if f.dir != "server" || resume == nil || resumed {
				t.Fatalf("docs/protocol.md:%d: Resumed is the server's answer to the Resume, once", f.line)
			}
			resumed = true
			p := v.(wire.ResumedPayload)
			if p.Epoch == "" {
				t.Fatalf("docs/protocol.md:%d: a Resumed without an epoch", f.line)
			}
			if p.Resumed {
				resumedTrue = true
				if resume.Epoch == "" || p.Epoch != resume.Epoch {
					t.Fatalf("docs/protocol.md:%d: resumed true needs the Resume's epoch %q, got %q", f.line, resume.Epoch, p.Epoch)
				}
				if p.Seq >= client.next {
					t.Fatalf("docs/protocol.md:%d: Resumed seq %d, but the client sent only %d packets", f.line, p.Seq, client.next-1)
				}
				// Each side resends after what the other has.
				client.next, server.next = p.Seq+1, resume.Seq+1
			} else {
				if p.Seq != 0 {
					t.Fatalf("docs/protocol.md:%d: resumed false has seq 0", f.line)
				}
				if p.Epoch == resume.Epoch {
					t.Fatalf("docs/protocol.md:%d: resumed false starts a new epoch", f.line)
				}
				newEpoch(p.Epoch)
			}
			continue
		}
		if !resumed {
			t.Fatalf("docs/protocol.md:%d: a %s before the Resumed", f.line, f.label)
		}
		me, peer := &client, &server
		if f.dir == "server" {
			me, peer = &server, &client
		}
		switch fr.Type {
		case wire.TypeData:
			if f.num != me.next {
				t.Fatalf("docs/protocol.md:%d: this %s Data is number %d, the text says #%d", f.line, f.dir, me.next, f.num)
			}
			if old, ok := me.sent[f.num]; ok {
				replays++
				if old != f.text {
					t.Fatalf("docs/protocol.md:%d: %s Data #%d resent as %s, first sent as %s", f.line, f.dir, f.num, f.text, old)
				}
			}
			me.sent[f.num] = f.text
			me.next++
		case wire.TypeAck:
			if seq := v.(wire.AckPayload).Seq; seq >= peer.next {
				t.Fatalf("docs/protocol.md:%d: Ack %d, but the peer has sent %d packets", f.line, seq, peer.next-1)
			}
		}
	}
	// The story §15.9 tells: a fresh start, a loss, a resume that replays.
	if connections != 2 || !resumedTrue || replays == 0 {
		t.Fatalf("docs/protocol.md: the example has %d connections, resumed true %v, %d replays; want 2, true and a replay", connections, resumedTrue, replays)
	}
}
