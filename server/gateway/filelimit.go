package gateway

import (
	"log/slog"
	"math"
)

// The file descriptors kept back from the data plane's connections when
// Config.Server.MaxConns is fitted to the process's file-descriptor limit
// (RLIMIT_NOFILE): for the listeners, the control plane's and the admin
// listener's connections, the files read at start and the Go runtime's
// own. The reserve is FileReservePercent of the limit, at least
// FileReserveMin, and at most half the limit (so that a tiny limit still
// leaves half of it to connections).
const (
	FileReserveMin     = 256
	FileReservePercent = 10
)

// fitMaxConns returns the most connections the data plane may hold under
// a file-descriptor limit, and the reserve kept back from it: maxConns
// when it fits in the limit less the reserve, else what fits (also for
// maxConns -1, no limit: past the descriptors, accept fails with EMFILE
// instead of refusing cleanly). A limit of 0 (unknown) fits anything.
func fitMaxConns(maxConns int, limit uint64) (effective int, reserve uint64) {
	if limit == 0 {
		return maxConns, 0
	}
	reserve = min(max(FileReserveMin, limit/100*FileReservePercent), limit/2)
	fit := limit - reserve
	if fit > math.MaxInt {
		return maxConns, reserve // no int is over it
	}
	if maxConns == -1 || uint64(maxConns) > fit {
		return int(fit), reserve
	}
	return maxConns, reserve
}

// fitFileLimit raises the soft file-descriptor limit to the hard one (Go's
// runtime does so at start on most systems, but not everywhere and not
// after another change), then returns maxConns fitted to it, logging once,
// at warn, when it lowers it.
func fitFileLimit(maxConns int, log *slog.Logger) int {
	limit := RaiseFileLimit(log)
	effective, reserve := fitMaxConns(maxConns, limit)
	if effective != maxConns {
		log.Warn("max_conns lowered to fit the file-descriptor limit",
			"requested", maxConns, "effective", effective, "file_limit", limit, "reserve", reserve,
			"hint", "the reserve is for the listeners, the control plane, the admin listener and files; for more connections raise the hard RLIMIT_NOFILE (ulimit -Hn, systemd LimitNOFILE=)")
	}
	return effective
}
