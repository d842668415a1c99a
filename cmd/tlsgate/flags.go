package main

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"unicode"

	"github.com/alecthomas/kong"

	"github.com/tlsgate/tlsgate/internal/loadgen"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/gateway"
	"github.com/tlsgate/tlsgate/wire"
)

// usageError is a bad setting found after parsing, by the gateway's
// validation or by serve itself: like kong's own usage errors, it exits
// with status 80.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// defaultVars are the ${...} variables of the flags' tags: the defaults
// of gateway.DefaultConfig and the bench's scenarios, so that the CLI
// writes none of them down again.
func defaultVars(devDir string) kong.Vars {
	d := gateway.DefaultConfig()
	s := d.Server
	return kong.Vars{
		"devdir":              devDir,
		"dialaddr":            defaultDialAddr,
		"listenaddr":          d.Addr,
		"controladdr":         d.ControlAddr,
		"adminaddr":           d.AdminAddr,
		"maxpayload":          strconv.Itoa(wire.MaxPayload),
		"queuebytes":          strconv.Itoa(s.QueueBytes),
		"handshaketimeout":    s.HandshakeTimeout.String(),
		"lingertimeout":       s.LingerTimeout.String(),
		"draintimeout":        s.DrainTimeout.String(),
		"shutdowntimeout":     s.ShutdownTimeout.String(),
		"idleinterval":        s.IdleInterval.String(),
		"pongtimeout":         s.PongTimeout.String(),
		"slowconsumertimeout": s.SlowConsumerTimeout.String(),
		"resumewindow":        s.ResumeWindow.String(),
		"resumebuffer":        strconv.Itoa(s.ResumeBuffer),
		"maxmemory":           strconv.FormatInt(s.MaxMemory, 10),
		"maxconns":            strconv.Itoa(s.MaxConns),
		"maxconnsperip":       strconv.Itoa(s.MaxConnsPerIP),
		"noconsumer":          string(d.NoConsumer),
		"consumepausetimeout": d.ConsumePauseTimeout.String(),
		"maxstreams":          strconv.Itoa(d.MaxStreams),

		"controlmaxheaderbytes":   strconv.Itoa(d.ControlMaxHeaderBytes),
		"controlmaxcallsperconn":  strconv.Itoa(d.ControlMaxCallsPerConn),
		"controlmaxconns":         strconv.Itoa(d.ControlMaxConns),
		"controlkeepalivemintime": d.ControlKeepaliveMinTime.String(),
		"scenarios":               strings.Join(loadgen.Scenarios, ","),
	}
}

// configFieldFlags maps the gateway.Config fields whose serve flag is not
// named after them.
var configFieldFlags = map[string]string{
	"TLSConfig":  "Cert",            // --cert and --key
	"ControlTLS": "ControlCert",     // with --control-key
	"ClientCAs":  "ControlClientCA", // ControlTLS.ClientCAs: mTLS
}

// flagError rewrites a *server.ConfigError of the gateway in the terms of
// serve's flags ("Config.Server.MaxPayload must be ..." becomes
// "--max-payload must be ...") as a usage error; other errors pass.
func flagError(err error) error {
	var ce *server.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	msg := flagOf(ce.Field, false) + " " + ce.Problem
	if len(ce.Fix) > 0 {
		fixes := make([]string, len(ce.Fix))
		for i, f := range ce.Fix {
			fixes[i] = flagOf(f, true)
		}
		msg += "; set " + strings.Join(fixes, " or ")
	}
	return usageError{errors.New(msg)}
}

// flagOf names the serve flag of a Config field (the data plane's as
// "Server.X"), with its env var when withEnv. A field without a flag keeps
// its Config name.
func flagOf(field string, withEnv bool) string {
	name := field[strings.LastIndexByte(field, '.')+1:]
	if f, ok := configFieldFlags[name]; ok {
		name = f
	}
	sf, ok := reflect.TypeFor[serveCmd]().FieldByName(name)
	if !ok {
		return "Config." + field
	}
	flag := sf.Tag.Get("name")
	if flag == "" {
		flag = kebab(sf.Name)
	}
	flag = "--" + flag
	if env := sf.Tag.Get("env"); withEnv && env != "" {
		flag += " (or " + env + ")"
	}
	return flag
}

// kebab is kong's flag name of a field without a name tag: a dash before
// every capital, so fields with acronyms carry a name tag
// ("HandshakeTimeout" is "handshake-timeout").
func kebab(name string) string {
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('-')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
