// Command tlsgate runs the tlsgate gateway (serve), talks to it from a
// terminal or a pipe (client), and makes client keys (keygen).
//
// Output conventions: stdout carries what a script wants (the listening
// address and dev fingerprint of serve, the received payloads of client, the
// key of keygen); diagnostics and logs go to stderr.
//
// Exit status: 0 on success, 1 on failure (for client: the connection did
// not end with a clean close it started itself), 80 on a usage error (a bad
// flag or value), 130 when client was interrupted.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/tlsgate/tlsgate/internal/devcert"
)

// cli is the command line: global flags, then one subcommand.
type cli struct {
	Globals globals `embed:""`

	Serve   serveCmd   `cmd:"" help:"Run the gateway."`
	Client  clientCmd  `cmd:"" help:"Send stdin lines as Data packets and print what comes back."`
	Keygen  keygenCmd  `cmd:"" help:"Write a new Ed25519 client key."`
	Bench   benchCmd   `cmd:"" help:"Measure the gateway against same-run baselines (docs/performance.md)."`
	Version versionCmd `cmd:"" help:"Print the version."`

	BenchClient  benchClientCmd  `cmd:"" name:"bench-client" hidden:"" help:"The client process of bench (internal)."`
	BenchBackend benchBackendCmd `cmd:"" name:"bench-backend" hidden:"" help:"The backend process of bench (internal)."`
}

// exitError ends the program with a status, its message already printed
// (or none to print).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// runtime is what every command's Run receives.
type runtime struct {
	ctx     context.Context
	globals *globals
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, the next one gets its default action: a
	// second Ctrl-C kills a shutdown that takes too long.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// kongExit carries an exit status requested by kong (after --help, or a
// parse error) out of run.
type kongExit struct{ code int }

// run parses args and runs the chosen command, returning the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	var c cli
	devDir, err := devcert.DefaultDir()
	if err != nil {
		devDir = "" // the commands that need it say so
	}
	defer func() {
		if r := recover(); r != nil {
			ke, ok := r.(kongExit)
			if !ok {
				panic(r)
			}
			code = ke.code
		}
	}()
	parser, err := kong.New(&c,
		kong.Name("tlsgate"),
		kong.Description("tlsgate is a TLS packet gateway that never loses a fully received packet. See README.md and docs/protocol.md."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(kongExit{code}) }),
		kong.ShortUsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		defaultVars(devDir),
	)
	if err != nil {
		panic(err) // a bug in the cli struct
	}
	kctx, err := parser.Parse(args)
	parser.FatalIfErrorf(err)

	rt := &runtime{ctx: ctx, globals: &c.Globals, stdin: stdin, stdout: stdout, stderr: stderr}
	err = kctx.Run(rt)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return int(ee)
	}
	fmt.Fprintf(stderr, "tlsgate: error: %v\n", err)
	if errors.As(err, new(usageError)) {
		return 80
	}
	return 1
}
