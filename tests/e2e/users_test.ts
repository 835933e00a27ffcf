/**
 * Users with limits, end to end with real daemons: a traffic limit closes the
 * live session with its reason, expired and disabled users are told why and
 * get nothing through, and counters survive a SIGKILL of the server (at most
 * one flush interval lost).
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  curl,
  type Daemon,
  freePort,
  spawnDeno,
  startClient,
  startOrigin,
} from "../support/daemons.ts";
import { encodeShareLink } from "../../shared/link.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

const MiB = 1024 * 1024;

async function setup(users: Record<string, unknown>[]) {
  const port = freePort("udp");
  const dir = await Deno.makeTempDir();
  const file = `${dir}/server.jsonc`;
  const stateFile = `${dir}/state.db`;
  await Deno.writeTextFile(
    file,
    JSON.stringify({ listen: [`127.0.0.1:${port}`], users, stateFile, statsFlushInterval: 1 }),
  );
  const start = async () => {
    const d = spawnDeno("server", "server/main.ts", ["--config", file]);
    await d.waitFor(/share link/);
    return d;
  };
  const link = (k: Uint8Array) => encodeShareLink({ key: k, server: { host: "127.0.0.1", port } });
  return { dir, start, link };
}

function user(name: string, extra: Record<string, unknown> = {}) {
  const key = generateAccessKey();
  return { key, entry: { name, key: formatAccessKey(key, "hex"), ...extra } };
}

const get = (proxyPort: number, url: string, timeout = "15") =>
  curl(["-m", timeout, "-o", "/dev/null", "--socks5-hostname", `127.0.0.1:${proxyPort}`, url]);

Deno.test({
  name: "e2e users: limit closes the live session; expired and disabled users are refused",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const alice = user("alice", { limitBytes: MiB });
    const bob = user("bob");
    const old = user("old", { expires: "2001-01-01T00:00:00Z" });
    const off = user("off", { enabled: false });
    const env = await setup([alice.entry, bob.entry, old.entry, off.entry]);
    const server = await env.start();
    const clients: Daemon[] = [];
    try {
      const a = await startClient(env.link(alice.key));
      clients.push(a.daemon);
      const b = await startClient(env.link(bob.key));
      clients.push(b.daemon);
      const url = (n: number) => `http://127.0.0.1:${origin.port}/bytes/${n}`;
      assertEquals((await get(b.proxyPort, url(2 * MiB))).code, 0, "bob fetches");
      // alice: 64 MiB against a 1 MiB allowance: cut off in the middle. With worker threads
      // the counters reach the main thread in batches (docs/workers.md), so the cut comes a
      // few MiB late on loopback; a transfer this long still shows it comes at all.
      const r = await get(a.proxyPort, url(64 * MiB));
      assert(r.code !== 0, "the over-limit transfer is cut off");
      await a.daemon.waitFor(/connecting to .*\(traffic limit reached\)/, 10_000);
      assert((await get(a.proxyPort, url(1000), "8")).code !== 0, "a new fetch fails");
      assertEquals((await get(b.proxyPort, url(1000))).code, 0, "bob keeps working");
      const dump = await server.statsDump();
      const ua = dump.users.find((u: { name: string }) => u.name === "alice");
      assert(ua.bytesDown >= MiB && ua.bytesDown < 32 * MiB, `alice down ${ua.bytesDown}`);
      assert(ua.sessions >= 1 && ua.streams >= 1, "sessions and streams counted");

      for (const [u, reason] of [[old, "account expired"], [off, "account disabled"]] as const) {
        const port = freePort("tcp");
        const c = spawnDeno("client", "client/main.ts", [
          env.link(u.key),
          "--listen",
          `127.0.0.1:${port}`,
        ]);
        clients.push(c);
        await c.waitFor(new RegExp(`connecting to .*\\(${reason}\\)`), 15_000);
        assert((await get(port, url(1000), "8")).code !== 0, `${u.entry.name} cannot fetch`);
        assert(server.count(new RegExp(`user ${u.entry.name} refused: ${reason}`)) >= 1);
      }
    } finally {
      for (const c of clients) await c.stop();
      await server.stop();
      await origin.close();
      await Deno.remove(env.dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "e2e users: counters survive kill -9 of the server, at most one flush interval lost",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const x = user("x");
    const env = await setup([x.entry]);
    let server = await env.start();
    let client;
    try {
      client = await startClient(env.link(x.key));
      const url = `http://127.0.0.1:${origin.port}/bytes/${3 * MiB}`;
      assertEquals((await get(client.proxyPort, url)).code, 0);
      await new Promise((r) => setTimeout(r, 2500)); // > 2 flush intervals
      const before = (await server.statsDump()).users.find((u: { name: string }) => u.name === "x");
      assert(before.bytesDown >= 3 * MiB, `counted ${before.bytesDown}`);
      await server.stop("SIGKILL");
      server = await env.start();
      const after = (await server.statsDump()).users.find((u: { name: string }) => u.name === "x");
      for (const f of ["bytesUp", "bytesDown", "streams", "sessions", "lastSeen"]) {
        assert(after[f] >= before[f], `${f}: ${after[f]} after restart < ${before[f]} before`);
      }
    } finally {
      await client?.daemon.stop();
      await server.stop();
      await origin.close();
      await Deno.remove(env.dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "e2e users: kill -9 in the middle of a transfer loses at most the last flush interval",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const x = user("x");
    const env = await setup([x.entry]);
    let server = await env.start();
    let client;
    try {
      client = await startClient(env.link(x.key), ["--keepalive", "1", "--idle-timeout", "3"]);
      const transfer = curl([
        "-m",
        "60",
        "--limit-rate",
        "2M",
        "-o",
        "/dev/null",
        "--socks5-hostname",
        `127.0.0.1:${client.proxyPort}`,
        `http://127.0.0.1:${origin.port}/bytes/${64 * MiB}`,
      ]);
      await new Promise((r) => setTimeout(r, 2000));
      // Sample the live counter while bytes flow, then kill without warning.
      const samples: [number, number][] = [];
      for (let i = 0; i < 12; i++) {
        const u = (await server.statsDump()).users.find((u: { name: string }) => u.name === "x");
        samples.push([performance.now(), u.bytesDown]);
        await new Promise((r) => setTimeout(r, 200));
      }
      const killedAt = performance.now();
      await server.stop("SIGKILL");
      assert((await transfer).code !== 0, "the transfer was still running when the server died");
      server = await env.start();
      const after = (await server.statsDump()).users.find((u: { name: string }) => u.name === "x");
      // Flush interval 1 s (+0.5 s for timer slack): everything counted by then was written.
      const due = samples.filter(([t]) => t <= killedAt - 1500).map(([, v]) => v);
      const last = samples[samples.length - 1][1];
      assert(
        due.length > 0 && after.bytesDown >= Math.max(...due),
        `loaded ${after.bytesDown} < ${due}`,
      );
      assert(after.bytesDown <= last + 4 * MiB, "nothing invented");
      console.log(
        `  kill -9 mid-transfer: ${last} bytes counted at the last sample, ${after.bytesDown} loaded ` +
          `after restart (lost ${
            Math.max(0, last - after.bytesDown)
          } bytes, flush interval 1 s at 2 MB/s)`,
      );
    } finally {
      await client?.daemon.stop();
      await server.stop();
      await origin.close();
      await Deno.remove(env.dir, { recursive: true });
    }
  },
});
