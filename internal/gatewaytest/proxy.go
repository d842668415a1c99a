package gatewaytest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections from its loopback address to a target and
// injects network faults on demand, with real sockets: a cut (FIN), a reset
// (RST), a silent stall (half-open), a cut inside a frame, bytes the sender
// wrote that never arrive, latency and a bandwidth limit.
//
// A fault applies to the connections through the proxy when it is called;
// new connections are forwarded normally, except that latency and
// bandwidth apply to every connection, and Blackhole to new ones.
type Proxy struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	links     map[*link]struct{}
	blackhole bool          // accept, but forward nothing and answer nothing
	latency   time.Duration // added before each chunk is forwarded
	bandwidth int           // bytes per second each way per link; 0: no limit
	wg        sync.WaitGroup
}

// Direction is a direction of traffic through a Proxy.
type Direction int

// The directions, seen from the proxy's client.
const (
	ToServer Direction = iota // from the client to the target
	ToClient                  // from the target to the client
)

// link is one proxied connection: the client's side and the target's.
// Its fields after the sockets are guarded by the proxy's mu.
type link struct {
	client, server net.Conn // server is nil for a blackholed link
	done           chan struct{}
	once           sync.Once

	stalled bool
	budget  [2]int  // bytes still forwarded per direction before the cut; <0: no cut due
	drop    [2]bool // drop what is read next in that direction, then cut
}

// NewProxy starts a proxy to target, stopped at the test's end.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, links: make(map[*link]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Blackhole makes the proxy accept new connections and then say nothing
// (a peer whose packets vanish) until Cut; connections already through it
// are not touched.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = true
}

// Cut closes every connection through the proxy, both sides, with a FIN
// (or a reset, where unread data is left in a socket); new ones are still
// accepted.
func (p *Proxy) Cut() {
	for _, l := range p.current() {
		p.end(l, false)
	}
}

// Reset closes every connection through the proxy, both sides, with a
// TCP reset: nothing still in flight is delivered.
func (p *Proxy) Reset() {
	for _, l := range p.current() {
		p.end(l, true)
	}
}

// Stall makes every connection through the proxy go silent, both ways,
// with its sockets left open: a half-open connection, as after a NAT box
// forgot the flow. Neither end learns of it until its own timeouts or a
// Cut.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.stalled = true
	}
}

// CutAfter lets every connection through the proxy forward n more bytes in
// direction d and then cuts it: with a small n, the cut falls inside a
// frame (a TLS record).
func (p *Proxy) CutAfter(d Direction, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.budget[d] = n
	}
}

// DropAndCut makes every connection through the proxy read the next bytes
// sent in direction d, deliver none of them, and be cut: the sender's
// write succeeded, and the receiver never read it.
func (p *Proxy) DropAndCut(d Direction) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.drop[d] = true
	}
}

// SetLatency delays every chunk forwarded, on every connection, by d (0:
// none).
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = d
}

// SetBandwidth limits every connection to bytesPerSecond each way (0: no
// limit).
func (p *Proxy) SetBandwidth(bytesPerSecond int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bandwidth = bytesPerSecond
}

func (p *Proxy) current() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	ls := make([]*link, 0, len(p.links))
	for l := range p.links {
		ls = append(ls, l)
	}
	return ls
}

// end closes both sides of l once, with a reset if rst.
func (p *Proxy) end(l *link, rst bool) {
	l.once.Do(func() {
		for _, c := range []net.Conn{l.client, l.server} {
			if c == nil {
				continue
			}
			if tc, ok := c.(*net.TCPConn); ok && rst {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
		}
		close(l.done)
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	})
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		l := &link{client: in, done: make(chan struct{}), budget: [2]int{-1, -1}}
		p.mu.Lock()
		blackhole := p.blackhole
		if blackhole {
			p.links[l] = struct{}{}
		}
		p.mu.Unlock()
		if blackhole {
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		l.server = out
		p.mu.Lock()
		p.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(l, ToServer)
		go p.pipe(l, ToClient)
	}
}

// pipe forwards one direction of l until either side ends or a fault ends
// it, then closes both sides.
func (p *Proxy) pipe(l *link, d Direction) {
	defer p.wg.Done()
	defer p.end(l, false)
	src, dst := l.client, l.server
	if d == ToClient {
		src, dst = l.server, l.client
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.forward(l, d, dst, buf[:n]) {
			return
		}
		if err != nil {
			return // EOF, a cut or a reset: over either way
		}
	}
}

// forward writes chunk to dst, as the faults of l allow; it reports false
// when l is to end.
func (p *Proxy) forward(l *link, d Direction, dst net.Conn, chunk []byte) bool {
	p.mu.Lock()
	stalled, drop, budget := l.stalled, l.drop[d], l.budget[d]
	if budget >= 0 {
		l.budget[d] = max(0, budget-len(chunk))
	}
	wait := p.latency
	if p.bandwidth > 0 {
		wait += time.Duration(len(chunk)) * time.Second / time.Duration(p.bandwidth)
	}
	p.mu.Unlock()
	switch {
	case stalled:
		<-l.done // silent until cut: the chunk is lost in the network
		return false
	case drop:
		return false
	case budget >= 0 && budget < len(chunk):
		_, _ = dst.Write(chunk[:budget])
		return false
	}
	if wait > 0 {
		// The fault being simulated is time itself: the network's delay.
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-l.done:
			timer.Stop()
			return false
		}
	}
	if _, err := dst.Write(chunk); err != nil {
		return false
	}
	return budget != len(chunk) // a budget used up exactly: cut now
}
