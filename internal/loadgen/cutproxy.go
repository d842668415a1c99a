package loadgen

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// cutProxy forwards TCP connections from a loopback port to a target and
// cuts them all on demand, both sides at once: the network fault of the
// resume scenario, with real sockets. It costs three descriptors per
// forwarded connection (the accepted one, the one to the target, and the
// client's own, in this process) and two 16 KiB buffers; it copies in user
// space, as splice would hold two pipes (four more descriptors) per
// connection.
type cutProxy struct {
	ln     net.Listener
	target string
	log    *slog.Logger

	mu    sync.Mutex
	conns map[net.Conn]struct{} // both sides of every forwarded connection
	cuts  int
	wg    sync.WaitGroup
}

// proxyBuf is the copy buffer of each direction.
const proxyBuf = 16 << 10

// startCutProxy listens on a loopback port and forwards to target.
func startCutProxy(ctx context.Context, target string, log *slog.Logger) (*cutProxy, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &cutProxy{ln: ln, target: target, log: log, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

// cut closes every connection through the proxy, both sides, and returns
// how many client connections it cut; new ones are still accepted.
func (p *cutProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns) / 2
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
	p.cuts++
	return n
}

// close stops accepting, cuts what is left and waits for its goroutines.
func (p *cutProxy) close() {
	_ = p.ln.Close()
	p.cut()
	p.wg.Wait()
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.log.Warn("cut proxy: accept", "err", err)
			}
			return
		}
		p.mu.Lock()
		p.conns[in] = struct{}{}
		cuts := p.cuts
		p.mu.Unlock()
		p.wg.Add(1)
		go p.forward(in, cuts)
	}
}

// forward dials the target for in, accepted before cut number cuts, and
// copies both ways until either side ends or a cut.
func (p *cutProxy) forward(in net.Conn, cuts int) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: 10 * time.Second}
	out, err := d.Dial("tcp", p.target)
	if err != nil {
		p.log.Warn("cut proxy: dial", "target", p.target, "err", err)
		p.drop(in)
		return
	}
	p.mu.Lock()
	_, alive := p.conns[in]
	alive = alive && p.cuts == cuts
	if alive {
		p.conns[out] = struct{}{}
	}
	p.mu.Unlock()
	if !alive { // cut while dialing
		_ = out.Close()
		p.drop(in)
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.pipe(out, in)
	}()
	p.pipe(in, out)
}

// pipe copies from src to dst until either ends, then closes both.
func (p *cutProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, proxyBuf)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if rerr != nil {
			break // EOF, a cut or a reset: over either way
		}
	}
	p.drop(dst)
	p.drop(src)
}

func (p *cutProxy) drop(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}
