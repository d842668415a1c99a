//go:build race

package main

// raceEnabled: the tests build the tlsgate binary with -race too.
const raceEnabled = true
