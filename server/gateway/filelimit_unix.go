//go:build unix

package gateway

import (
	"log/slog"
	"syscall"
)

// RaiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit (gateway.New
// does; so do processes that hold many connections of their own, such as
// the bench's client process) and
// returns the soft limit in force: the raised one, or, when it cannot
// raise it (it logs why), the one it found; 0 when it cannot read it.
func RaiseFileLimit(log *slog.Logger) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("reading RLIMIT_NOFILE", "err", err)
		return 0
	}
	if lim.Cur >= lim.Max {
		return uint64(lim.Cur) //nolint:unconvert // int64 on the BSDs
	}
	old := lim.Cur
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("raising RLIMIT_NOFILE to its hard limit", "from", old, "to", lim.Max, "err", err)
		return uint64(old) //nolint:unconvert // int64 on the BSDs
	}
	log.Debug("raised RLIMIT_NOFILE to its hard limit", "from", old, "to", lim.Max)
	return uint64(lim.Cur) //nolint:unconvert // int64 on the BSDs
}
