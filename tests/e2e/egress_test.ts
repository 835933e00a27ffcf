/**
 * End to end: the server's egress policy (docs/egress.md) through real
 * ostp-server and ostp-client processes, with curl through the SOCKS5 and the
 * HTTP proxy. With the built-in policy, loopback (IPv4, IPv6, IPv4-mapped), the
 * management API on 127.0.0.1, private, CGNAT, link-local, ULA addresses and
 * `localhost` are refused — SOCKS5 reply 0x02 (curl exit 97), HTTP 403 — and
 * the client is told why; an allow entry opens exactly what it names; a reload
 * applies a new policy to new connections; SOCKS5 UDP ASSOCIATE datagrams are
 * dropped or delivered by the same rules.
 *
 * Safety: every non-loopback target here is refused by the policy before the
 * server dials anything. Each test first proves the policy is in force (the
 * loopback origin, which listens, is refused and counted) before it names a
 * private or link-local address, and every refusal must show in the server's
 * `egressDenied` counter — a dial attempt would not count there.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  curl,
  EGRESS_DEFAULT,
  freePort,
  type ServerHandle,
  startClient,
  startOrigin,
  startServer,
} from "../support/daemons.ts";
import { OstpPool } from "../../client/outbound/ostp.ts";
import { decodeShareLink } from "../../shared/link.ts";
import { DialError } from "../../shared/duplex.ts";
import { startUdpEcho } from "../support/socks_udp.ts";
import { datagramInbox } from "../support/datagram_inbox.ts";

/** curl's exit code when a SOCKS5 proxy refuses the request (CURLE_PROXY, reply 0x02 here). */
const CURL_PROXY_REFUSED = 97;
const TIMEOUTS = ["--connect-timeout", "10", "-m", "20"];

/** An origin on [::1] (on `port` if given and free), or null without IPv6 loopback. */
function v6Origin(port = 0): ReturnType<typeof startOrigin> | null {
  try {
    Deno.listen({ hostname: "::1", port }).close();
  } catch {
    return null;
  }
  return startOrigin("::1", port);
}

/** GET `url` through the SOCKS5 proxy (names resolved by the proxy, i.e. the server). */
async function viaSocks(proxyPort: number, url: string) {
  const r = await curl([...TIMEOUTS, "--socks5-hostname", `127.0.0.1:${proxyPort}`, url]);
  return { code: r.code, body: new TextDecoder().decode(r.stdout), stderr: r.stderr };
}

/** The HTTP status of GET `url` through the HTTP proxy (absolute-form request). */
async function viaHttp(proxyPort: number, url: string): Promise<string> {
  const r = await curl([
    ...TIMEOUTS,
    "-x",
    `http://127.0.0.1:${proxyPort}`,
    "-o",
    "/dev/null",
    "-w",
    "%{http_code}",
    url,
  ]);
  assertEquals(r.code, 0, r.stderr);
  return new TextDecoder().decode(r.stdout);
}

/** The server's TCP and UDP egress refusals (status on its control socket). */
async function denied(server: ServerHandle): Promise<{ tcp: number; udp: number }> {
  return (await server.daemon.statsDump()).stats.egressDenied;
}

/** Asserts `url` is refused by the policy through both proxies, counted twice by the server. */
async function assertRefused(server: ServerHandle, proxyPort: number, url: string): Promise<void> {
  const before = (await denied(server)).tcp;
  const s = await viaSocks(proxyPort, url);
  assertEquals(s.code, CURL_PROXY_REFUSED, `${url} via SOCKS5: ${s.stderr}`);
  assertEquals(await viaHttp(proxyPort, url), "403", `${url} via HTTP`);
  assertEquals((await denied(server)).tcp, before + 2, `${url}: refused by the egress policy`);
}

/** A pool of one session to `server`, for reading the open failure the client receives. */
async function poolFor(server: ServerHandle): Promise<OstpPool> {
  const link = decodeShareLink(server.link);
  const pool = new OstpPool({
    server: link.server,
    key: link.key,
    mux: 1,
    session: {},
    connectTimeoutMs: 10_000,
    reconnect: { initialDelayMs: 200, maxDelayMs: 1000 },
  });
  pool.start();
  const end = performance.now() + 10_000;
  while (pool.runners[0].state !== "connected" && performance.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assertEquals(pool.runners[0].state, "connected");
  return pool;
}

/** The open failure of a dial through `pool`. */
async function dialFailure(pool: OstpPool, host: string, port: number): Promise<DialError> {
  try {
    const s = await pool.dial({ host, port });
    s.close();
  } catch (e) {
    if (e instanceof DialError) return e;
    throw e;
  }
  throw new Error(`${host}:${port} was not refused`);
}

Deno.test({
  name: "e2e egress: the default policy refuses loopback, the API, private and link-local targets",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const origin = startOrigin();
    const v6 = v6Origin();
    if (!v6) console.warn("IPv6 loopback unavailable: the [::1] cases are skipped");
    const dir = await Deno.makeTempDir();
    const apiPort = freePort("tcp");
    const token = "egress-test-token-0123456789";
    await Deno.writeTextFile(
      `${dir}/server.json`,
      JSON.stringify({ api: { listen: `127.0.0.1:${apiPort}`, token } }),
    );
    const closers: (() => Promise<unknown> | void)[] = [
      () => Deno.remove(dir, { recursive: true }),
      () => origin.close(),
      () => v6?.close(),
    ];
    try {
      const server = await startServer([EGRESS_DEFAULT, "-c", `${dir}/server.json`]);
      closers.push(() => server.daemon.stop());
      const client = await startClient(server.link);
      closers.push(() => client.daemon.stop());
      const proxy = client.proxyPort;
      // The origins and the API are up: a refusal is the policy's, not an absent listener's.
      assertEquals(
        await (await fetch(`http://127.0.0.1:${origin.port}/hello`)).text(),
        "hello\n",
      );
      const api = await fetch(`http://127.0.0.1:${apiPort}/api/v1/status`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      assertEquals(api.status, 200);
      assertEquals((await api.json()).egressDenied, { tcp: 0, udp: 0 });

      const active = await t.step("loopback is refused: the policy is in force", async () => {
        await assertRefused(server, proxy, `http://127.0.0.1:${origin.port}/hello`);
      });
      // A failed step does not stop the test: without a policy in force, the steps below
      // would make the server dial private and link-local addresses. Stop here instead.
      if (!active) throw new Error("the egress policy is not in force; nothing else is tried");

      await t.step("the client is told why", async () => {
        const pool = await poolFor(server);
        try {
          const e = await dialFailure(pool, "127.0.0.1", origin.port);
          assertEquals([e.reason, e.message], ["denied", "not allowed: 127.0.0.1 is loopback"]);
          const api = await dialFailure(pool, "127.0.0.1", apiPort);
          assertEquals(api.message, "not allowed: 127.0.0.1 is loopback");
          const local = await dialFailure(pool, "localhost", origin.port);
          assertEquals(local.reason, "denied");
          // A name's refusal does not tell the client what the name resolves to.
          assertEquals(local.message, "not allowed: localhost resolves to a non-public address");
        } finally {
          await pool.stop();
        }
      });

      await t.step("IPv6 and IPv4-mapped loopback, localhost by name", async () => {
        if (v6) await assertRefused(server, proxy, `http://[::1]:${v6.port}/hello`);
        await assertRefused(server, proxy, `http://[::ffff:127.0.0.1]:${origin.port}/hello`);
        await assertRefused(server, proxy, `http://localhost:${origin.port}/hello`);
      });

      await t.step(
        "the management API on 127.0.0.1 is unreachable through the tunnel",
        async () => {
          await assertRefused(server, proxy, `http://127.0.0.1:${apiPort}/api/v1/status`);
          await assertRefused(server, proxy, `http://[::ffff:127.0.0.1]:${apiPort}/api/v1/users`);
          await assertRefused(server, proxy, `http://localhost:${apiPort}/metrics`);
        },
      );

      await t.step(
        "private, CGNAT, link-local and ULA addresses are refused before a dial",
        async () => {
          for (
            const host of [
              "10.0.0.1",
              "192.168.1.1",
              "172.16.0.1",
              "169.254.169.254",
              "100.64.0.1",
              "[fc00::1]",
              "[fe80::1]",
              "[::ffff:10.0.0.1]",
            ]
          ) await assertRefused(server, proxy, `http://${host}:80/`);
        },
      );

      await t.step("status and metrics count the refusals", async () => {
        const n = (await denied(server)).tcp;
        assertEquals(n, 2 * (1 + (v6 ? 1 : 0) + 2 + 3 + 8) + 3, "every refusal counted");
        const status = await fetch(`http://127.0.0.1:${apiPort}/api/v1/status`, {
          headers: { Authorization: `Bearer ${token}` },
        });
        assertEquals((await status.json()).egressDenied.tcp, n);
        const metrics = await (await fetch(`http://127.0.0.1:${apiPort}/metrics`, {
          headers: { Authorization: `Bearer ${token}` },
        })).text();
        assert(metrics.includes(`ostp_egress_denied_total{proto="tcp"} ${n}\n`), metrics);
      });
    } finally {
      for (const c of closers.reverse()) {
        try {
          await c();
        } catch { /* best effort */ }
      }
    }
  },
});

Deno.test({
  name: "e2e egress: an allow entry opens exactly the address and port it names",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const other = startOrigin();
    // The allowed port on [::1] too: only the address differs.
    const v6 = v6Origin(origin.port);
    const closers: (() => Promise<unknown> | void)[] = [
      () => origin.close(),
      () => other.close(),
      () => v6?.close(),
    ];
    try {
      const server = await startServer(["--egress-allow", `127.0.0.1:${origin.port}`]);
      closers.push(() => server.daemon.stop());
      const client = await startClient(server.link);
      closers.push(() => client.daemon.stop());
      const proxy = client.proxyPort;
      const ok = await viaSocks(proxy, `http://127.0.0.1:${origin.port}/hello`);
      assertEquals([ok.code, ok.body], [0, "hello\n"], ok.stderr);
      assertEquals(await viaHttp(proxy, `http://127.0.0.1:${origin.port}/hello`), "200");
      // The same address in its IPv4-mapped spelling is the same target.
      const mapped = await viaSocks(proxy, `http://[::ffff:127.0.0.1]:${origin.port}/hello`);
      assertEquals([mapped.code, mapped.body], [0, "hello\n"], mapped.stderr);
      // Not another port, not another loopback address, not IPv6 loopback.
      await assertRefused(server, proxy, `http://127.0.0.1:${other.port}/hello`);
      await assertRefused(server, proxy, `http://127.0.0.2:${origin.port}/hello`);
      if (v6) await assertRefused(server, proxy, `http://[::1]:${origin.port}/hello`);
      assertEquals((await denied(server)).tcp, v6 ? 6 : 4);
    } finally {
      for (const c of closers.reverse()) {
        try {
          await c();
        } catch { /* best effort */ }
      }
    }
  },
});

Deno.test({
  name: "e2e egress: a reload (SIGHUP) with a new allow opens the target for new connections",
  ignore: Deno.build.os === "windows",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const dir = await Deno.makeTempDir();
    const path = `${dir}/server.json`;
    await Deno.writeTextFile(path, JSON.stringify({ log: { level: "info" } }));
    const closers: (() => Promise<unknown> | void)[] = [
      () => Deno.remove(dir, { recursive: true }),
      () => origin.close(),
    ];
    try {
      const server = await startServer([EGRESS_DEFAULT, "-c", path]);
      closers.push(() => server.daemon.stop());
      const client = await startClient(server.link);
      closers.push(() => client.daemon.stop());
      const url = `http://127.0.0.1:${origin.port}/hello`;
      await assertRefused(server, client.proxyPort, url);
      const mark = server.daemon.output.length;
      await Deno.writeTextFile(
        path,
        JSON.stringify({ log: { level: "info" }, egress: { allow: [`127.0.0.1:${origin.port}`] } }),
      );
      server.daemon.signal("SIGHUP");
      await server.daemon.waitFor(/config reloaded/, 20_000, mark);
      const r = await viaSocks(client.proxyPort, url);
      assertEquals([r.code, r.body], [0, "hello\n"], r.stderr);
      // The same session: the policy changed under it, the tunnel did not restart.
      assertEquals((await server.daemon.statsDump()).stats.sessions, 1);
    } finally {
      for (const c of closers.reverse()) {
        try {
          await c();
        } catch { /* best effort */ }
      }
    }
  },
});

// --- UDP ----------------------------------------------------------------------

async function readN(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  for (let got = 0; got < n;) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error("control connection closed");
    got += r;
  }
  return out;
}

/** A SOCKS5 UDP association: the control connection, the relay port and the app's socket. */
async function associate(proxyPort: number) {
  const ctl = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  await ctl.write(Uint8Array.of(5, 1, 0));
  assertEquals([...(await readN(ctl, 2))], [5, 0]);
  await ctl.write(Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, 0, 0));
  const rep = await readN(ctl, 10);
  assertEquals([rep[0], rep[1]], [5, 0], `UDP ASSOCIATE reply ${[...rep]}`);
  const relayPort = (rep[8] << 8) | rep[9];
  const app = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const inbox = datagramInbox(app);
  return {
    /** Sends `text` to 127.0.0.1:`port` through the association; the echoed text, or null. */
    async ask(port: number, text: string, waitMs = 1500): Promise<string | null> {
      const data = new TextEncoder().encode(text);
      const d = new Uint8Array(10 + data.length);
      d.set([0, 0, 0, 1, 127, 0, 0, 1, port >> 8, port & 0xff]);
      d.set(data, 10);
      await app.send(d, { transport: "udp", hostname: "127.0.0.1", port: relayPort });
      const got = await inbox.next(waitMs);
      return got ? new TextDecoder().decode(got.subarray(10)) : null;
    },
    close() {
      for (const c of [ctl, app]) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

Deno.test({
  name: "e2e egress: SOCKS5 UDP datagrams to loopback are dropped by default, delivered if allowed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const echo = startUdpEcho();
    const closers: (() => Promise<unknown> | void)[] = [() => echo.close()];
    try {
      const strict = await startServer([EGRESS_DEFAULT]);
      closers.push(() => strict.daemon.stop());
      const c1 = await startClient(strict.link);
      closers.push(() => c1.daemon.stop());
      const a1 = await associate(c1.proxyPort);
      closers.push(() => a1.close());
      for (let i = 0; i < 3; i++) assertEquals(await a1.ask(echo.port, `refused ${i}`), null);
      assertEquals(echo.got, [], "nothing reached the target");
      assertEquals(await denied(strict), { tcp: 0, udp: 3 });

      const open = await startServer(["--egress-allow", `127.0.0.1:${echo.port}`]);
      closers.push(() => open.daemon.stop());
      const c2 = await startClient(open.link);
      closers.push(() => c2.daemon.stop());
      const a2 = await associate(c2.proxyPort);
      closers.push(() => a2.close());
      let answer: string | null = null;
      for (let i = 0; i < 3 && answer === null; i++) answer = await a2.ask(echo.port, "allowed");
      assertEquals(answer, "allowed");
      // Exactly what it names: another loopback port stays refused.
      const closed = freePort("udp");
      assertEquals(await a2.ask(closed === echo.port ? closed + 1 : closed, "other port"), null);
      assertEquals((await denied(open)).udp, 1);
    } finally {
      for (const c of closers.reverse()) {
        try {
          await c();
        } catch { /* best effort */ }
      }
    }
  },
});
