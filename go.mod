module github.com/tlsgate/tlsgate

go 1.26

require (
	github.com/alecthomas/kong v1.17.0
	github.com/vmihailenco/msgpack/v5 v5.4.1
	go.uber.org/goleak v1.3.0
)

require github.com/vmihailenco/tagparser/v2 v2.0.0 // indirect
