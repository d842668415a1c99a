// Shared by the end-to-end tests: run bin/tlsgate, wait for its output
// lines, bound every wait.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { ControlService } from "../gen/tlsgate/v1/control_service_pb.js";

export const BIN = process.env.TLSGATE_BIN ?? fileURLToPath(new URL("../../../bin/tlsgate", import.meta.url));
export const TIMEOUT_MS = 20_000;

// start spawns bin/tlsgate with stdin kept open, and kills it at the end of
// the test if it is still running.
export function start(t, name, args) {
  const child = spawn(BIN, args, { stdio: ["pipe", "pipe", "pipe"] });
  const proc = { child, stdout: new Lines(child.stdout), stderr: new Lines(child.stderr) };
  // "close" comes after "exit" and after the output pipes have closed, so
  // no line is lost; it then fails every wait on the output at once.
  proc.exited = new Promise((resolve, reject) => {
    child.once("error", (err) => reject(new Error(`${name}: ${BIN}: ${err.message}`)));
    child.once("close", (code, signal) => resolve({ code, signal }));
  });
  proc.exited.then(
    (how) => `${name} exited ${JSON.stringify(how)}`,
    (err) => err.message,
  ).then((why) => {
    proc.stdout.end(why);
    proc.stderr.end(why);
  });
  proc.stdout.name = `${name} stdout`;
  proc.stderr.name = `${name} stderr`;
  proc.stdout.other = proc.stderr;
  proc.stderr.other = proc.stdout;
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await proc.exited.catch(() => {});
    }
  });
  return proc;
}

// Lines collects a stream's lines and resolves waits for a line matching a
// pattern, as the lines arrive.
export class Lines {
  #lines = [];
  #partial = "";
  #waiters = new Set();
  #ended = null;

  constructor(stream) {
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      const parts = (this.#partial + chunk).split("\n");
      this.#partial = parts.pop();
      parts.forEach((line) => this.#add(line));
    });
    stream.on("end", () => {
      if (this.#partial) this.#add(this.#partial);
      this.#partial = "";
    });
  }

  #add(line) {
    this.#lines.push(line);
    for (const w of this.#waiters) w.line(line);
  }

  text() {
    return this.#lines.join("\n") + (this.#partial ? `\n${this.#partial}` : "");
  }

  // end fails every pending and later wait with why.
  end(why) {
    this.#ended ??= why;
    for (const w of this.#waiters) w.fail(why);
  }

  // waitFor resolves with the match of the first line, past or future,
  // matching re, or rejects after TIMEOUT_MS or when the process ends.
  waitFor(re) {
    const seen = this.#lines.find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen.match(re));
    return new Promise((resolve, reject) => {
      const w = {
        line: (l) => {
          const m = l.match(re);
          if (m) done(() => resolve(m));
        },
        fail: (why) => done(() => reject(this.#error(re, why))),
      };
      const timer = setTimeout(() => w.fail(`no such line after ${TIMEOUT_MS} ms`), TIMEOUT_MS);
      const done = (settle) => {
        clearTimeout(timer);
        this.#waiters.delete(w);
        settle();
      };
      this.#waiters.add(w);
      if (this.#ended !== null) w.fail(this.#ended);
    });
  }

  #error(re, why) {
    const other = this.other ? `\n${this.other.name}:\n${this.other.text()}` : "";
    return new Error(`${this.name}: waiting for ${re}: ${why}\n${this.name}:\n${this.text()}${other}`);
  }
}

// bounded rejects when promise has not settled after TIMEOUT_MS.
export function bounded(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not after ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// startGateway runs `tlsgate serve` (echo handler) and one `tlsgate client`
// session, and returns them with a generated control-plane client.
export async function startGateway(t) {
  const devDir = mkdtempSync(join(tmpdir(), "tlsgate-ts-"));
  t.after(() => rmSync(devDir, { recursive: true, force: true }));

  const server = start(t, "server", ["serve", "--addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0", "--dev-dir", devDir, "--handler", "echo"]);
  const [, addr] = await server.stdout.waitFor(/^listening on (\S+)$/);
  const [, controlAddr] = await server.stdout.waitFor(/^control plane listening on (\S+)$/);

  const cli = start(t, "client", ["client", "--addr", addr, "--dev-dir", devDir]);
  const [, id] = await cli.stderr.waitFor(/^connected: session (\d+) /);

  const sessionManager = new Http2SessionManager(`http://${controlAddr}`);
  t.after(() => sessionManager.abort());
  const control = createClient(ControlService, createGrpcTransport({ baseUrl: `http://${controlAddr}`, sessionManager }));
  return { server, cli, control, sessionManager, sessionId: BigInt(id) };
}

// stop ends the client's input (it closes gracefully and exits 0), then
// stops the server with SIGTERM (it exits 0).
export async function stopGateway(assert, { server, cli, sessionManager }) {
  cli.child.stdin.end();
  assert.deepEqual(await bounded(cli.exited, "client exit"), { code: 0, signal: null }, `client stderr:\n${cli.stderr.text()}`);
  sessionManager.abort();
  server.child.kill("SIGTERM");
  assert.deepEqual(await bounded(server.exited, "server exit"), { code: 0, signal: null }, `server stderr:\n${server.stderr.text()}`);
}

// Requests is an async iterable of request messages for a client or
// bidirectional stream, fed with push and ended with end.
export class Requests {
  #items = [];
  #wake = null;
  #done = false;

  push(m) {
    this.#items.push(m);
    this.#wake?.();
  }

  end() {
    this.#done = true;
    this.#wake?.();
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      while (this.#items.length > 0) yield this.#items.shift();
      if (this.#done) return;
      await new Promise((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = null;
    }
  }
}
