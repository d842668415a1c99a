//go:build !unix

package gateway

import "log/slog"

// raiseFileLimit does nothing where there is no RLIMIT_NOFILE; 0: the
// limit is unknown, and fitMaxConns leaves MaxConns as it is.
func raiseFileLimit(*slog.Logger) uint64 { return 0 }
