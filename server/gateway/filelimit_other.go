//go:build !unix

package gateway

import "log/slog"

// RaiseFileLimit does nothing where there is no RLIMIT_NOFILE; 0: the
// limit is unknown, and fitMaxConns leaves MaxConns as it is.
func RaiseFileLimit(*slog.Logger) uint64 { return 0 }
