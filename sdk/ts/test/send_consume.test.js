// End-to-end test of the batched sends and the acknowledged consume through
// the buf-generated client, against the real gateway (see harness.js).

import { test } from "node:test";
import assert from "node:assert/strict";

import { Code } from "@connectrpc/connect";

import { FullQueuePolicy } from "../gen/tlsgate/v1/control_service_pb.js";

import { Requests, TIMEOUT_MS, startGateway, stopGateway } from "./harness.js";

const encode = (s) => new TextEncoder().encode(s);
const decode = (b) => new TextDecoder().decode(b);

test("SendBatch, SendStream and Consume through the generated client", { timeout: 4 * TIMEOUT_MS }, async (t) => {
  const gw = await startGateway(t);
  const { cli, control, sessionId } = gw;
  const signal = AbortSignal.timeout(3 * TIMEOUT_MS);

  // SendBatch: two good items and a bad one, answered item for item.
  const batch = await control.sendBatch(
    { items: [{ sessionId, payload: encode('"b1"') }, { sessionId: 0n, payload: encode('"bad"') }, { sessionId, payload: encode('"b2"') }] },
    { signal },
  );
  assert.deepEqual(batch.results.map((r) => r.seq), [1n, 0n, 2n]);
  assert.equal(batch.results[1].error?.code, Code.InvalidArgument);
  assert.equal(batch.results[1].error?.message, "items[1].session_id: required");
  await cli.stdout.waitFor(/^"b1"$/);
  await cli.stdout.waitFor(/^"b2"$/);

  // SendStream: two requests, two responses, in order.
  const sends = new Requests();
  const responses = control.sendStream(sends, { signal })[Symbol.asyncIterator]();
  sends.push({ items: [{ sessionId, payload: encode('"s1"') }] });
  sends.push({ items: [{ sessionId, payload: encode('"s2"') }, { sessionId, payload: encode('"s3"') }], fullQueue: FullQueuePolicy.WAIT });
  const first = await responses.next();
  const second = await responses.next();
  assert.deepEqual(first.value.results.map((r) => r.seq), [3n]);
  assert.deepEqual(second.value.results.map((r) => r.seq), [4n, 5n]);
  sends.end();
  assert.equal((await responses.next()).done, true);
  for (const want of ['"s1"', '"s2"', '"s3"']) await cli.stdout.waitFor(new RegExp(`^${want}$`));

  // Consume: a line typed into the client reaches the consumer, not the
  // echo handler; the consumer acks it.
  const acks = new Requests();
  acks.push({ request: { case: "open", value: { group: "ts" } } });
  // The response headers say the stream is a member of its group.
  let member;
  const joined = new Promise((resolve) => {
    member = resolve;
  });
  const deliveries = control.consume(acks, { signal, onHeader: () => member() })[Symbol.asyncIterator]();
  const next = deliveries.next(); // starts the call
  await joined;
  cli.child.stdin.write('{"from": "typescript"}\n');
  const { value } = await next;
  const d = value.deliveries[0];
  assert.equal(d.item.case, "packet");
  assert.equal(d.item.value.sessionId, sessionId);
  assert.equal(d.item.value.seq, 1n);
  assert.equal(decode(d.item.value.payload), '{"from": "typescript"}');
  assert.equal(d.redelivered, false);
  acks.push({ request: { case: "acks", value: { acks: [{ sessionId, throughSeq: 1n }] } } });

  // The client's graceful close comes after its packet: the consumer gets
  // the connection's end marker.
  const stopping = stopGateway(assert, gw);
  const end = await deliveries.next();
  assert.equal(end.value.deliveries[0].item.case, "closed");
  assert.equal(end.value.deliveries[0].item.value.sessionId, sessionId);
  acks.end();
  await stopping;
});
