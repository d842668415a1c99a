package main

// Structured logs: with --log-format json, every line about a session
// carries session_id, conn_id and remote_addr; there is no line per packet
// at info; the control token never shows.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

func TestJSONLogsCarrySessionFields(t *testing.T) {
	t.Parallel()
	const token = "tok-3e1f0b7d9c2a-never-logged"
	srv := startServeEnv(t, []string{"TLSGATE_CONTROL_TOKEN=" + token}, "--dev-dir", t.TempDir(), "--log-format", "json")
	ctl := controlClient(t, srv.controlAddr, token)
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()

	const packets = 40
	key := newKey(t)
	first := dial(t, srv, key)
	echo(t, first, packets)
	for i := range packets {
		if _, err := ctl.SendAsync(ctx, &tlsgatev1.SendAsyncRequest{SessionId: first.ID(), Payload: fmt.Appendf(nil, `"async %d"`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	recv(t, first, packets)
	second := dial(t, srv, key) // takeover
	<-first.Done()
	echo(t, second, 1)
	if _, err := ctl.Disconnect(ctx, &tlsgatev1.DisconnectRequest{SessionId: second.ID(), Reason: "logs test"}); err != nil {
		t.Fatal(err)
	}
	sid := second.ID()
	srv.stop()
	<-srv.stderr.eof

	session := map[string]bool{ // the data plane's lines about a session
		"session connected": true, "session taken over": true,
		"session taken over by another connection": true, "connection closed": true,
	}
	seen := map[string]int{}
	infoAboutSession := 0
	disconnectLogged := false
	for i, line := range strings.Split(srv.stderr.String(), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber() // session IDs are 64-bit
		if err := dec.Decode(&rec); err != nil {
			t.Errorf("stderr line %d is not JSON: %v\n%s", i+1, err, line)
			continue
		}
		msg, _ := rec["msg"].(string)
		_, hasSID := rec["session_id"]
		if rec["plane"] == "control" {
			// An RPC's line: the session it names, no connection fields.
			if rec["grpc.method"] == "Disconnect" && hasSID {
				disconnectLogged = fmt.Sprint(rec["session_id"]) == strconv.FormatUint(sid, 10)
			}
			if rec["grpc.method"] == "SendAsync" && rec["level"] == "INFO" {
				t.Errorf("a successful SendAsync logged at info (one line per packet): %s", line)
			}
			continue
		}
		_, hasConn := rec["conn_id"]
		if session[msg] || hasSID || hasConn {
			seen[msg]++
			for _, k := range []string{"session_id", "conn_id", "remote_addr"} {
				if v, ok := rec[k]; !ok || v == "" {
					t.Errorf("log line about a session lacks %s: %s", k, line)
				}
			}
			if rec["level"] == "INFO" {
				infoAboutSession++
			}
		}
	}
	for msg, n := range map[string]int{"session connected": 2, "session taken over": 1, "session taken over by another connection": 1, "connection closed": 2} {
		if seen[msg] != n {
			t.Errorf("%d lines %q, want %d", seen[msg], msg, n)
		}
	}
	if !disconnectLogged {
		t.Errorf("no control-plane line for Disconnect with session_id %d", sid)
	}
	// 2×40 echoes and 40 SendAsync: a line per packet would show.
	if infoAboutSession > 10 {
		t.Errorf("%d info lines about the session for %d packets: per-packet logging at info?", infoAboutSession, 3*packets)
	}
	if strings.Contains(srv.stderr.String(), token) || strings.Contains(srv.stdout.String(), token) {
		t.Error("the control token shows in serve's output")
	}
}
