/**
 * The client's re-handshake beside a silent session, in process: a relay
 * between the pool and the server drops everything (the server dies or the
 * path does). A restarted server is found again within seconds and the
 * streams of the lost session fail cleanly, for each session of a `mux`
 * pool; a path that comes back before the new handshake wins keeps the old
 * session and its streams.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { formatAccessKey, generateAccessKey, OstpServer, parseServerConfig } from "../../mod.ts";
import { OstpPool } from "../../client/outbound/ostp.ts";
import type { Duplex } from "../../shared/duplex.ts";
import { payload, sha256Hex, startOrigin } from "../support/daemons.ts";
import { UdpRelay } from "../support/udp_relay.ts";
import { openUdp } from "../../shared/net/datagram.ts";

function startServer(key: Uint8Array): OstpServer {
  const server = new OstpServer(
    parseServerConfig({
      listen: ["127.0.0.1:0"],
      keys: [formatAccessKey(key, "hex")],
      // The origin is on loopback, which the egress policy refuses unless allowed.
      egress: { allow: ["127.0.0.0/8"] },
    }),
  );
  server.start();
  return server;
}

function makePool(key: Uint8Array, port: number, mux: number, silent: number[]): OstpPool {
  return new OstpPool({
    server: { host: "127.0.0.1", port },
    key,
    mux,
    session: {},
    connectTimeoutMs: 10_000,
    reconnect: { initialDelayMs: 500, maxDelayMs: 30_000 },
    onUnresponsive: (i) => silent.push(i),
  });
}

/** Sends a GET for `path` on a dialed stream (the response is read by the caller). */
async function request(pool: OstpPool, originPort: number, path: string): Promise<Duplex> {
  const s = await pool.dial({ host: "127.0.0.1", port: originPort });
  await s.write(
    new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n`),
  );
  return s;
}

/** Reads a stream to its end: the bytes, or the error that ended it. */
async function readAll(s: Duplex, limit = Infinity): Promise<{ data: Uint8Array; error?: Error }> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(65536);
  try {
    while (total < limit) {
      const n = await s.read(buf.subarray(0, Math.min(buf.length, limit - total)));
      if (n === null) break;
      chunks.push(buf.slice(0, n));
      total += n;
    }
  } catch (e) {
    return { data: concat(chunks, total), error: e as Error };
  }
  return { data: concat(chunks, total) };
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

function body(response: Uint8Array): Uint8Array {
  for (let i = 0; i + 3 < response.length; i++) {
    if (
      response[i] === 13 && response[i + 1] === 10 && response[i + 2] === 13 &&
      response[i + 3] === 10
    ) {
      return response.subarray(i + 4);
    }
  }
  throw new Error("no HTTP header end");
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test({
  name:
    "re-handshake: a restarted server behind silence is found again; lost streams fail cleanly (mux 2)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const key = generateAccessKey();
    let server = startServer(key);
    const relay = new UdpRelay(server.addresses[0].port);
    const silent: number[] = [];
    const pool = makePool(key, relay.port, 2, silent);
    pool.start();
    try {
      await until(() => pool.runners.every((r) => r.state === "connected"), 5000, "connected");
      // One long download per session, read a little, then left waiting.
      const held = [
        await request(pool, origin.port, `/bytes/${20 << 20}`),
        await request(pool, origin.port, `/bytes/${20 << 20}`),
      ];
      for (const h of held) assertEquals((await readAll(h, 65536)).data.length, 65536);
      assert(pool.runners.every((r) => r.conn!.streamCount === 1), "one held stream per session");
      const oldPorts = pool.runners.map((r) => r.localPort);

      // The server dies without a word; a new one (empty session table) takes its place.
      relay.dropping = true;
      await server.stop(); // its goodbye is dropped
      server = startServer(key);
      relay.target = server.addresses[0].port;
      const before = oldPorts.map((p) => relay.fromServer.get(p) ?? 0);
      relay.dropping = false;
      const back = performance.now();
      // Two requests at once: one on each session, both silent and undetected so far.
      const answers = await Promise.all([
        request(pool, origin.port, "/hello").then((s) => readAll(s)),
        request(pool, origin.port, "/hello").then((s) => readAll(s)),
      ]);
      const ms = performance.now() - back;
      console.log(`requests answered ${(ms / 1000).toFixed(2)} s after the server came back`);
      for (const a of answers) {
        assertEquals(a.error, undefined);
        assert(new TextDecoder().decode(a.data).endsWith("hello\n"));
      }
      assert(ms < 8000, `recovery took ${ms.toFixed(0)} ms`); // generous: not the idle timeout
      assertEquals(pool.runners.map((r) => r.connects), [2, 2], "each session was replaced");
      assertEquals(silent.sort(), [0, 1], "each session's silence was reported once");
      for (const h of held) {
        const rest = await readAll(h);
        assert(rest.error instanceof Deno.errors.ConnectionReset, `held stream: ${rest.error}`);
        assert(rest.data.length < 20 << 20);
      }
      assertEquals(server.dispatcher.sessionCount, 2);
      // The new server got the old sessions' packets and never answered them.
      assertEquals(oldPorts.map((p) => relay.fromServer.get(p) ?? 0), before);
      assert(server.dispatcher.drops.unauthenticated > 0, "old-session packets counted as drops");
      assert(pool.runners.every((r) => !oldPorts.includes(r.localPort)), "new sockets");
    } finally {
      await pool.stop();
      await server.stop();
      await relay.close();
      await origin.close();
    }
  },
});

Deno.test({
  name:
    "re-handshake: a path back before the new handshake wins keeps the old session and its streams",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const key = generateAccessKey();
    const server = startServer(key);
    const relay = new UdpRelay(server.addresses[0].port);
    const silent: number[] = [];
    const pool = makePool(key, relay.port, 1, silent);
    pool.start();
    const runner = pool.runners[0];
    const size = 4 << 20;
    try {
      await until(() => runner.state === "connected", 5000, "connected");
      const s = await request(pool, origin.port, `/bytes/${size}`);
      const head = await readAll(s, 100_000);
      assertEquals(head.data.length, 100_000);
      relay.dropping = true;
      await until(() => runner.unresponsive, 10_000, "the silence noticed");
      assertEquals(runner.state, "connecting", "a silent session takes no new streams");
      await new Promise((r) => setTimeout(r, 1200)); // new hellos go unanswered meanwhile
      relay.dropping = false;
      await until(() => runner.state === "connected", 5000, "the old session answering");
      assertEquals(runner.connects, 1, "no new session: the old one answered first");
      assertEquals(silent, [0]);
      const rest = await readAll(s);
      assertEquals(rest.error, undefined);
      const all = body(concat([head.data, rest.data], head.data.length + rest.data.length));
      assertEquals(all.length, size);
      assertEquals(await sha256Hex(all), await sha256Hex(payload(size)));
      // A hello answered meanwhile was closed again: the server holds one session.
      await until(() => server.dispatcher.sessionCount === 1, 3000, "one server session");
    } finally {
      await pool.stop();
      await server.stop();
      await relay.close();
      await origin.close();
    }
  },
});

/** `p`, or a failure naming `what` after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(t);
  }
}

Deno.test({
  name:
    "re-handshake: an attempt's own server address does not redirect the silent session's packets",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const key = generateAccessKey();
    const server = startServer(key);
    const relay = new UdpRelay(server.addresses[0].port);
    // The server's name moves: the first answer is where the relay listens; later ones
    // point at another loopback address where nothing answers.
    const resolved: string[] = [];
    const pool = new OstpPool({
      server: { host: "ostp.test", port: relay.port },
      key,
      mux: 1,
      session: {},
      connectTimeoutMs: 10_000,
      reconnect: { initialDelayMs: 500, maxDelayMs: 30_000 },
      lookup: (host) => {
        assertEquals(host, "ostp.test");
        const address = resolved.length === 0 ? "127.0.0.1" : "127.0.0.2";
        resolved.push(address);
        return Promise.resolve({ address });
      },
    });
    pool.start();
    const runner = pool.runners[0];
    try {
      await until(() => runner.state === "connected", 5000, "connected");
      const s = await request(pool, origin.port, "/bytes/1000000");
      const head = await readAll(s, 100_000);
      assertEquals(head.data.length, 100_000);
      relay.dropping = true;
      await until(() => runner.unresponsive, 10_000, "the silence noticed");
      // A new attempt resolved the other address and sends its hellos there...
      await until(() => resolved.length >= 2, 3000, "a new attempt's lookup");
      await new Promise((r) => setTimeout(r, 1200));
      // ...while the silent session's pings still go to its own server: when the path is
      // back, it answers and stays (it would never hear back from 127.0.0.2).
      relay.dropping = false;
      await until(() => runner.state === "connected", 5000, "the old session answering");
      assertEquals(runner.connects, 1, "no new session: the old one answered");
      // Its acks and data must reach the server too (not the attempt's address).
      const rest = await within(readAll(s), 10_000, "the rest of the stream");
      assertEquals(rest.error, undefined);
      assertEquals(
        body(concat([head.data, rest.data], head.data.length + rest.data.length)).length,
        1000000,
      );
      // And it still carries new streams to the right place.
      const again = await within(
        request(pool, origin.port, "/bytes/1000").then((d) => readAll(d)),
        10_000,
        "a new stream",
      );
      assertEquals(body(again.data).length, 1000);
    } finally {
      await pool.stop();
      await server.stop();
      await relay.close();
      await origin.close();
    }
  },
});

Deno.test({
  name: "runner: rebind() that cannot open a socket logs and returns false; the session stays",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const key = generateAccessKey();
    const server = startServer(key);
    let failOpen = false;
    const pool = new OstpPool({
      server: { host: "127.0.0.1", port: server.addresses[0].port },
      key,
      mux: 1,
      session: {},
      connectTimeoutMs: 10_000,
      reconnect: { initialDelayMs: 500, maxDelayMs: 30_000 },
      openSocket: (hostname, port) => {
        if (failOpen) throw new Deno.errors.Busy("Too many open files (os error 24)");
        return openUdp(hostname, port);
      },
    });
    pool.start();
    const runner = pool.runners[0];
    try {
      await until(() => runner.state === "connected", 5000, "connected");
      const port = runner.localPort;
      failOpen = true;
      assertEquals(runner.rebind(), false, "no socket: not moved, and no throw");
      assertEquals(runner.localPort, port);
      assertEquals(runner.state, "connected");
      const r = await readAll(await request(pool, origin.port, "/bytes/1000"));
      assertEquals(body(r.data).length, 1000, "the session still carries streams");
      failOpen = false;
      assertEquals(runner.rebind(), true);
      assert(runner.localPort !== port, "moved to a new socket once one opens");
      const r2 = await readAll(await request(pool, origin.port, "/bytes/1000"));
      assertEquals(body(r2.data).length, 1000);
    } finally {
      await pool.stop();
      await server.stop();
      await origin.close();
    }
  },
});

Deno.test({
  name: "runner: a server name lookup is bounded by the connect timeout and ended by stop()",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const failures: string[] = [];
    let lookups = 0;
    const hanging = (timeoutMs: number) =>
      new OstpPool({
        server: { host: "hangs.test", port: 9 },
        key: generateAccessKey(),
        mux: 1,
        session: {},
        connectTimeoutMs: timeoutMs,
        reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 },
        onAttemptFailed: (_i, reason) => failures.push(reason),
        lookup: () => {
          lookups++;
          return new Promise(() => {}); // never answers
        },
      });
    const bounded = hanging(200);
    bounded.start();
    try {
      await until(() => failures.length === 1, 3000, "the lookup to time out");
      assertEquals(failures, ["cannot resolve hangs.test: no answer within 200 ms"]);
    } finally {
      await bounded.stop();
    }
    // A lookup that hangs does not hold stop(), whatever the connect timeout.
    const long = hanging(60_000);
    long.start();
    await until(() => lookups === 2, 1000, "the second pool's lookup");
    const t0 = performance.now();
    await long.stop();
    const took = performance.now() - t0;
    assert(took < 1000, `stop() took ${took.toFixed(0)} ms`);
    assertEquals(long.runners[0].state, "stopped");
    assertEquals(failures.length, 1, "a stop is not reported as a failed attempt");
  },
});
