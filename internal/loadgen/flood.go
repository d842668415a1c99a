package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	goclient "github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/gateway"
	"github.com/tlsgate/tlsgate/wire"
)

// flood: the memory attack of the 0-byte frame. FloodSessions clients send
// 0-byte Data frames as fast as they can to the in-process gateway's echo
// handler and never read: every frame costs the server a queued echo, the
// costliest packet for its size. Two runs, each on a fresh gateway: with
// the queue bounds alone (--queue-bytes each, --max-memory off), then with
// --max-memory at half of what the queue bounds allow. Each run lets the
// attack go until the gateway stops reading the attackers, while one more
// client round-trips echoes beside them, and reports the process's RSS and
// live heap against what they were before the attack plus the bound, and
// the gateway's own high-water mark of what the sessions held. The loss
// check is the bystander's echoes.
func (e *env) flood(ctx context.Context) error {
	if e.opts.Addr != "" {
		return errors.New("flood measures this process's memory: it needs the in-process gateway (no --addr)")
	}
	queueBytes := gateway.DefaultConfig().Server.QueueBytes
	n := e.opts.FloodSessions
	all := int64(n) * int64(queueBytes)
	for _, run := range []struct {
		name      string
		maxMemory int64
		bound     int64
	}{
		{fmt.Sprintf("queue bounds only (%d × --queue-bytes %d MiB)", n, queueBytes>>20), -1, all},
		{fmt.Sprintf("--max-memory %d MiB", all/2>>20), all / 2, all / 2},
	} {
		e.prog.step("flood: " + run.name)
		if err := e.floodRun(ctx, run.name, run.maxMemory, run.bound); err != nil {
			return fmt.Errorf("flood, %s: %w", run.name, err)
		}
		e.prog.stepDone()
	}
	return nil
}

func (e *env) floodRun(ctx context.Context, name string, maxMemory, bound int64) error {
	gw, err := startGatewayWith(ctx, e.cert, server.Echo{}, e.log, func(c *gateway.Config) {
		c.Server.MaxMemory = maxMemory
		c.Server.SlowConsumerTimeout = time.Hour // the attackers never read: keep them for the measurement
	})
	if err != nil {
		return err
	}
	defer func() { _ = gw.stop() }()
	run := nextRun()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	bystander, err := goclient.Dial(ctx, gw.addr, key(run, e.opts.FloodSessions), goclient.WithTLSConfig(e.cliTLS), goclient.WithLogger(e.log))
	if err != nil {
		return err
	}
	defer func() { _ = bystander.Close(context.WithoutCancel(ctx)) }()
	var attackers []*peer // never read
	defer func() {
		for _, a := range attackers {
			_ = a.tc.Close()
		}
	}()
	for i := range e.opts.FloodSessions {
		a, err := dialPeer(ctx, gw.addr, e.cliTLS, key(run, i), bufSize, bufSize)
		if err != nil {
			return err
		}
		attackers = append(attackers, a)
	}
	before := measureMemory()

	burst := bytes.Repeat(wire.AppendFrame(nil, wire.TypeData, wire.JSON, nil), 4096)
	var frames atomic.Uint64
	for _, a := range attackers {
		go func() { // until the gateway stops reading it, then until its close
			for {
				if _, err := a.tc.Write(burst); err != nil {
					return
				}
				frames.Add(4096)
			}
		}()
	}
	var sent, echoed uint64
	echo := func() error {
		sent++
		if err := bystander.Send(ctx, goclient.Data([]byte(`"bystander"`))); err != nil {
			return err
		}
		p, err := bystander.Recv(ctx)
		if err != nil {
			return err
		}
		if string(p.Payload) == `"bystander"` {
			echoed++
		}
		return nil
	}
	// The attack has done what it can once the gateway stops reading the
	// attackers: they hold half the bound at least (an array's growth
	// needs room: see server.queue.growth), and their frames stop
	// counting up over 1,000 of the bystander's round trips in a row.
	for last, still := uint64(0), 0; still < 1000 || gw.srv.Stats().MemoryHighWater < bound/2; {
		if err := echo(); err != nil {
			return fmt.Errorf("bystander, %d echoes in, the attackers holding %d bytes of %d: %w", sent, gw.srv.Stats().MemoryHeld, bound, err)
		}
		if now := frames.Load(); now != last || now == 0 {
			last, still = now, 0
		} else {
			still++
		}
	}
	after := measureMemory()
	st := gw.srv.Stats()
	e.log.Info("flood", "run", name, "frames", frames.Load(), "held", st.MemoryHeld, "high_water", st.MemoryHighWater)

	label := fmt.Sprintf("%d sessions flooding 0-byte frames, %s", e.opts.FloodSessions, name)
	// Against what the process held before the attack plus the bound:
	// a ratio of at most 1 is an attack held within the bound.
	e.figure(Figure{Scenario: "flood", Name: label + ": RSS", Unit: "MiB", Value: mib(after.rss),
		Baseline: "RSS before + the bound", BaselineValue: mib(before.rss + uint64(bound))})
	e.target("≤ 1.0", after.rss <= before.rss+uint64(bound))
	e.figure(Figure{Scenario: "flood", Name: label + ": live heap", Unit: "MiB", Value: mib(after.heap),
		Baseline: "heap before + the bound", BaselineValue: mib(before.heap + uint64(bound))})
	e.figure(Figure{Scenario: "flood", Name: label + ": held at most (tlsgate_memory_high_water_bytes)", Unit: "MiB", Value: mib(uint64(st.MemoryHighWater)),
		Baseline: "the bound", BaselineValue: mib(uint64(bound))})
	e.loss(Loss{Scenario: "flood", Name: label + ": the bystander's echoes", Sent: sent, Processed: echoed,
		Detail: "echoes the session beside the attackers received"})
	return nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
