package loadgen

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/tlsgate/tlsgate/server/gateway"
	"github.com/tlsgate/tlsgate/wire"
)

// ChildEnv is set (to "1") in the environment of the connections
// scenario's client process.
const ChildEnv = "TLSGATE_BENCH_CHILD"

// childConfig is the first line the parent writes to the child's stdin.
type childConfig struct {
	Addr        string `json:"addr"`
	Conns       int    `json:"conns"`
	Concurrency int    `json:"concurrency"`
	// Gateway: run the tlsgate handshake with keys (Run, i), and send one
	// Data packet on each connection once all are established.
	Gateway bool `json:"gateway"`
	Run     int  `json:"run"`
}

// childCommand is each later line: "burst" (every client sends Packets
// Data packets of Size bytes and a Flush, and reports once every FlushAck
// is in; repeatable), then "close" (the clients close, all at once,
// gracefully) or "wait" (the server closes them).
type childCommand struct {
	Cmd     string `json:"cmd"`
	Packets int    `json:"packets,omitempty"`
	Size    int    `json:"size,omitempty"`
}

// childReport is what the child writes to stdout, one line per phase.
type childReport struct {
	Established int    `json:"established"`
	ElapsedNS   int64  `json:"elapsed_ns"`
	Err         string `json:"err,omitempty"`
	Data        uint64 `json:"data"`
	Clean       int    `json:"clean"`
	CloseNS     int64  `json:"close_ns"`
}

// RunChild is the connections scenario's client process: it reads its
// configuration from in, opens the connections, reports, then closes them
// as told. Run by `tlsgate bench-client` (hidden) or a test binary.
func RunChild(ctx context.Context, in io.Reader, out io.Writer, log *slog.Logger) error {
	gateway.RaiseFileLimit(log)
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	var cfg childConfig
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("child config: %w", err)
	}
	if lim := fileLimit(); lim > 0 && uint64(cfg.Conns)+64 > lim {
		return enc.Encode(childReport{Err: fmt.Sprintf("RLIMIT_NOFILE is %d, too low for %d connections: raise the hard limit (ulimit -Hn)", lim, cfg.Conns)})
	}
	keys := make([]ed25519.PrivateKey, cfg.Conns)
	if cfg.Gateway {
		for i := range keys {
			keys[i] = key(cfg.Run, i)
		}
	}
	tlsCfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13} //nolint:gosec // a load client on loopback
	cs := make([]*client, cfg.Conns)
	errs := make([]error, cfg.Conns)
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sem := make(chan struct{}, max(1, cfg.Concurrency))
	var wg sync.WaitGroup
	start := time.Now()
	for i := range cs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			p, err := dialPeer(dctx, cfg.Addr, tlsCfg, keys[i], 4<<10, 512)
			if err != nil {
				errs[i] = err
				return
			}
			cs[i] = startClient(p, false)
		})
	}
	wg.Wait()
	rep := childReport{ElapsedNS: int64(time.Since(start))}
	for i, c := range cs {
		if c != nil {
			rep.Established++
		} else if rep.Err == "" {
			rep.Err = errs[i].Error()
		}
	}
	if cfg.Gateway && rep.Err == "" {
		payload := []byte(`"idle"`)
		for _, c := range cs {
			if err := c.send(wire.TypeData, wire.JSON, payload); err != nil {
				rep.Err = err.Error()
				break
			}
		}
	}
	if err := enc.Encode(rep); err != nil {
		return err
	}
	var live []*client
	for _, c := range cs {
		if c != nil {
			live = append(live, c)
		}
	}
	var cmd childCommand
	for {
		cmd = childCommand{}
		if err := dec.Decode(&cmd); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if cmd.Cmd != "burst" {
			break
		}
		t := time.Now()
		var brep childReport
		if err := burst(ctx, live, cmd, max(1, cfg.Concurrency)); err != nil {
			brep.Err = err.Error()
		}
		brep.ElapsedNS = int64(time.Since(t))
		if err := enc.Encode(brep); err != nil {
			return err
		}
	}
	cctx, cancel2 := context.WithTimeout(ctx, time.Minute)
	defer cancel2()
	t := time.Now()
	switch {
	case cmd.Cmd == "close" && cfg.Gateway:
		rep.Clean = closeAll(cctx, live)
	case cmd.Cmd == "close":
		for _, c := range live {
			_ = c.tc.Close()
			<-c.done
		}
	default: // the server closes them
		for _, c := range live {
			if c.wait(cctx).clean() {
				rep.Clean++
			}
		}
	}
	rep.CloseNS = int64(time.Since(t))
	for _, c := range live {
		rep.Data += c.data.Load()
	}
	return enc.Encode(rep)
}

// burst has every client send cmd.Packets Data packets of cmd.Size bytes,
// then a Flush, concurrency clients at a time, and returns once every
// FlushAck is in: the server has processed them all.
func burst(ctx context.Context, cs []*client, cmd childCommand, concurrency int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	payload := make([]byte, cmd.Size)
	sem := make(chan struct{}, concurrency)
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for range cmd.Packets {
				if errs[i] = c.send(wire.TypeData, wire.JSON, payload); errs[i] != nil {
					return
				}
			}
			c.burstSeq++
			if errs[i] = c.sendControl(wire.TypeFlush, wire.FlushPayload{Seq: c.burstSeq}); errs[i] == nil {
				errs[i] = c.waitAck(ctx, c.burstSeq)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
