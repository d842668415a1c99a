package server

import (
	"fmt"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// The watchdog is a per-connection timer that checks, a few times per
// interval, for two kinds of dead weight: a client that stopped reading
// (the writer has been stuck in one flush for the slow-consumer timeout)
// and a client that went silent (no packet for the idle interval: Ping;
// still nothing after the pong timeout: close). It runs no goroutine
// between checks.

// watchdogPeriod is how often a connection is checked.
func (s *Server) watchdogPeriod() time.Duration {
	p := min(s.cfg.IdleInterval, s.cfg.PongTimeout, s.cfg.SlowConsumerTimeout) / 4
	return max(p, 5*time.Millisecond)
}

func (c *conn) startWatchdog() {
	t := time.AfterFunc(time.Hour, c.check)
	t.Stop()
	c.watchdog = t
	t.Reset(c.srv.watchdogPeriod())
}

func (c *conn) check() {
	if c.ctx.Err() != nil {
		return // the connection is over
	}
	cfg := &c.srv.cfg
	now := time.Now().UnixNano()
	c.mu.Lock()
	closing := c.state != StateActive
	c.mu.Unlock()
	switch {
	case closing: // the close has its own bounds
	case c.flushingSince.Load() != 0 && now-c.flushingSince.Load() > int64(cfg.SlowConsumerTimeout):
		c.srv.counters.slowConsumers.Add(1)
		if c.resumable {
			// Lost, not closed: its session is kept for a Resume.
			c.log.Info("slow consumer: the client has not read for the slow-consumer timeout; dropping the resumable connection", "timeout", cfg.SlowConsumerTimeout)
			c.abort(OutcomeTimeout)
			return
		}
		c.log.Info("slow consumer: the client has not read for the slow-consumer timeout; closing", "timeout", cfg.SlowConsumerTimeout)
		// The client is not reading: its Goodbye can only go out if it
		// resumes, so the drain gets the linger timeout, not the full one.
		c.startCloseIn(wire.GoodbyePayload{
			Code:      wire.GoodbyeSlowConsumer,
			Reason:    fmt.Sprintf("the client did not read for %s", cfg.SlowConsumerTimeout),
			Reconnect: true,
		}, c.encoding(), cfg.LingerTimeout)
	case c.processing.Load():
		// The reader is in the handler and reads nothing: a client pushing
		// against that back-pressure is not idle.
	case now-c.lastActivity.Load() > int64(cfg.IdleInterval):
		ping := c.pingSentAt.Load()
		switch {
		case ping < c.lastActivity.Load(): // nothing outstanding since the last packet
			c.pingSentAt.Store(now)
			c.pingNonce++
			payload, _ := wire.Marshal(c.encoding(), wire.PingPayload{Nonce: c.pingNonce})
			// Never blocks: a full queue is the slow-consumer check's business.
			_ = c.sess.q.enqueuePing(entry{typ: wire.TypePing, enc: c.encoding(), payload: payload, only: c})
		case now-ping > int64(cfg.PongTimeout):
			c.srv.counters.idleTimeouts.Add(1)
			if c.resumable {
				c.log.Info("idle timeout: no packet and no Pong; dropping the resumable connection", "idle_interval", cfg.IdleInterval, "pong_timeout", cfg.PongTimeout)
				c.abort(OutcomeTimeout)
				return
			}
			c.log.Info("idle timeout: no packet and no Pong; closing", "idle_interval", cfg.IdleInterval, "pong_timeout", cfg.PongTimeout)
			c.startClose(CloseOptions{Code: wire.GoodbyeIdleTimeout, Reason: "no traffic and no Pong"})
		}
	}
	c.watchdog.Reset(c.srv.watchdogPeriod())
}
