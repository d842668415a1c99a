package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// globals are the flags every command accepts.
type globals struct {
	DevDir    string `name:"dev-dir" env:"TLSGATE_DEV_DIR" type:"path" default:"${devdir}" placeholder:"DIR" help:"Directory of dev mode: the self-signed certificate of serve and the default client key (default: ${default})."`
	LogLevel  string `name:"log-level" env:"TLSGATE_LOG_LEVEL" enum:"debug,info,warn,error" default:"info" help:"Log level: ${enum} (default: ${default})."`
	LogFormat string `name:"log-format" env:"TLSGATE_LOG_FORMAT" enum:"text,json" default:"text" help:"Log format on stderr: ${enum} (default: ${default})."`
}

// devDir returns --dev-dir, or an error when it is empty (no user config
// directory could be found for its default).
func (g *globals) devDir() (string, error) {
	if g.DevDir == "" {
		return "", errors.New("--dev-dir: no default (the user config directory is unknown; set $HOME or $XDG_CONFIG_HOME), pass --dev-dir")
	}
	return g.DevDir, nil
}

// logger builds the logger the flags ask for, writing to w.
func (g *globals) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch g.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, got %q", g.LogFormat)
}
