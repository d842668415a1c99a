// End-to-end test of the buf-generated client (../gen) against the real
// gateway: `tlsgate serve` with its gRPC control plane, one `tlsgate client`
// session, and @connectrpc/connect-node's gRPC transport (HTTP/2 cleartext).
//
// Run with `make test-ts` (builds bin/tlsgate), or `npm test` here
// with TLSGATE_BIN pointing at a built binary (default: ../../../bin/tlsgate
// from this folder, the repository's bin/tlsgate: BIN in harness.js).
// Every wait is event-driven and bounded, so a failure never hangs CI.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Code, ConnectError } from "@connectrpc/connect";

import { Encoding } from "../gen/tlsgate/v1/packet_pb.js";

import { TIMEOUT_MS, escapeRegExp, startGateway, stopGateway } from "./harness.js";

test("ListSessions and SendAsync through the generated client", { timeout: 4 * TIMEOUT_MS }, async (t) => {
  const gw = await startGateway(t);
  const { cli, control, sessionId } = gw;
  const callOptions = () => ({ signal: AbortSignal.timeout(TIMEOUT_MS) });

  // The session is registered before the client learns its ID, so it is
  // listed as soon as the client has printed it.
  const list = await control.listSessions({}, callOptions());
  const session = list.sessions.find((s) => s.sessionId === sessionId);
  assert.ok(session, `session ${sessionId} not in ListSessions: ${list.sessions.map((s) => s.sessionId)}`);
  assert.equal(typeof session.sessionId, "bigint");

  const payload = JSON.stringify("from-typescript");
  const sent = await control.sendAsync(
    { sessionId, payload: new TextEncoder().encode(payload), encoding: Encoding.JSON },
    callOptions(),
  );
  assert.equal(sent.seq, 1n);
  await cli.stdout.waitFor(new RegExp(`^${escapeRegExp(payload)}$`));

  const missing = session.sessionId === 1n ? 2n : 1n;
  await assert.rejects(
    control.sendAsync({ sessionId: missing, payload: new TextEncoder().encode("{}"), encoding: Encoding.JSON }, callOptions()),
    (err) => {
      assert.ok(err instanceof ConnectError, `not a ConnectError: ${err}`);
      assert.equal(err.code, Code.NotFound, `code ${Code[err.code]}: ${err.message}`);
      return true;
    },
  );

  await stopGateway(assert, gw);
});
