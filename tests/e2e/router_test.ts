/**
 * End to end: the client's router between real ostp-server and ostp-client
 * processes, driven by curl (SOCKS5 and HTTP proxy) and SOCKS5 UDP ASSOCIATE,
 * payloads compared by SHA-256 (issue 8, "Done means").
 *
 * Which way a flow went is proved by stopping the server: what is excluded
 * (a domain suffix, a CIDR, a program) still loads, what is tunnelled fails
 * with a proper error. Every target is on loopback and resolves without DNS:
 * `localhost` (the system's hosts file; the origin listens on 127.0.0.1 and,
 * where it exists, ::1 at the same port), 127.0.0.1 and 127.0.0.2 (Linux
 * answers the whole 127.0.0.0/8 on lo).
 *
 * Also: a `block` rule answers SOCKS5 0x02 and HTTP 403; a reload switches a
 * target's outbound while a rate-limited download on it keeps going and
 * arrives intact, and a bad config is refused; the `http` outbound through
 * squid with and without Basic auth; UDP datagrams follow the rules (direct,
 * tunnel, block, and an http outbound that cannot carry them).
 */

import { assert, assertEquals } from "../support/assert.ts";
import {
  type Daemon,
  freePort,
  payload,
  sha256Hex,
  startClient,
  startOrigin,
  startServer,
} from "../support/daemons.ts";
import { haveSquid, ncsaAuth, SQUID, startSquid } from "../support/squid.ts";
import { associate, Receiver, socksUdp, startUdpEcho } from "../support/socks_udp.ts";
import { type ClientStats, OstpClient } from "../../client/client.ts";
import { parseClientConfig } from "../../shared/config/client_config.ts";
import { formatHostPort } from "../../shared/config/types.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const CURL = "/usr/bin/curl";
const LINUX = Deno.build.os === "linux";

function isFile(p: string): boolean {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}

const haveCurl = isFile(CURL);
if (!haveCurl) console.warn(`SKIP router e2e tests: ${CURL} not installed`);
if (!LINUX) console.warn("SKIP the process exclusion check: process lookup here is Linux's /proc");

/** Whether 127.0.0.2 can be bound (Linux: all of 127.0.0.0/8 is local). */
function canBind(host: string): boolean {
  try {
    Deno.listen({ hostname: host, port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

interface Fetched {
  code: number;
  body: Uint8Array;
  stderr: string;
  /** `%{http_code}` as curl printed it on the last line of stderr (see {@link fetch}). */
  status: string;
}

/**
 * Runs curl (or a copy of it at `exe`) with `args` and the URL; the body is
 * stdout, the HTTP status goes to stderr's last line (`-w %{stderr}`).
 */
async function fetch(args: string[], url: string, exe = CURL): Promise<Fetched> {
  const out = await new Deno.Command(exe, {
    args: ["-sS", "-m", "30", "-w", "%{stderr}\\n%{http_code}", ...args, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr).trimEnd();
  const cut = err.lastIndexOf("\n");
  return {
    code: out.code,
    body: out.stdout,
    stderr: cut >= 0 ? err.slice(0, cut) : "",
    status: err.slice(cut + 1),
  };
}

const socks = (port: number) => ["--socks5-hostname", `127.0.0.1:${port}`];
const httpProxy = (port: number) => ["-x", `http://127.0.0.1:${port}`];

/** Fetches `/bytes/n?seed=s` from `base` and checks it byte for byte. */
async function expectBytes(
  proxyArgs: string[],
  base: string,
  n: number,
  seed: number,
  exe = CURL,
): Promise<void> {
  const r = await fetch(proxyArgs, `${base}/bytes/${n}?seed=${seed}`, exe);
  assertEquals(r.code, 0, `${exe} ${base}: ${r.stderr}`);
  assertEquals(r.body.length, n, base);
  assertEquals(await sha256Hex(r.body), await sha256Hex(payload(n, seed)), base);
}

/** Rule hits by label from the client's `status` on its control socket. */
async function hits(client: Daemon): Promise<Record<string, number>> {
  const a = await client.statsDump();
  return Object.fromEntries(
    (a.rules as { label: string; hits: number }[]).map((r) => [r.label, r.hits]),
  );
}

/** Sends `data` to 127.0.0.1:`port` through the association; the echoed payload or null. */
async function udpRoundTrip(
  app: Receiver,
  relayPort: number,
  port: number,
  text: string,
  waitMs = 2000,
): Promise<string | null> {
  app.drain();
  const data = new TextEncoder().encode(text);
  for (let attempt = 0; attempt < 2; attempt++) {
    await app.send(socksUdp(port, data), relayPort);
    const r = await app.next(waitMs);
    if (r) {
      assertEquals([...r.subarray(4, 10)], [127, 0, 0, 1, port >> 8, port & 0xff]);
      return new TextDecoder().decode(r.subarray(10));
    }
  }
  return null;
}

/**
 * An origin on 127.0.0.1 with `/bytes/<n>?seed=s` (as `startOrigin`) and
 * `/gated`: `n` bytes of seed `seed`, of which the second half is sent only
 * after {@link GatedOrigin.release} — a download that is provably still
 * running until then, whatever the socket buffers hold.
 */
function startGatedOrigin(n: number, seed: number) {
  const body = payload(n, seed);
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  let halfSent!: () => void;
  const half = new Promise<void>((r) => halfSent = r);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const url = new URL(req.url);
    const m = url.pathname.match(/^\/bytes\/(\d+)$/);
    if (m) {
      const bytes = payload(Number(m[1]), Number(url.searchParams.get("seed") ?? 1));
      return new Response(bytes as Uint8Array<ArrayBuffer>);
    }
    if (url.pathname !== "/gated") return new Response("not found", { status: 404 });
    const mid = n >> 1;
    const stream = new ReadableStream<Uint8Array>({
      async start(ctl) {
        for (let at = 0; at < mid; at += 64 * 1024) {
          ctl.enqueue(body.slice(at, Math.min(mid, at + 64 * 1024)));
        }
        halfSent();
        await gate;
        for (let at = mid; at < n; at += 64 * 1024) {
          ctl.enqueue(body.slice(at, Math.min(n, at + 64 * 1024)));
        }
        ctl.close();
      },
    });
    return new Response(stream, { headers: { "content-length": String(n) } });
  });
  return { port: server.addr.port, half, release, close: () => server.shutdown() };
}

async function writeConfig(path: string, cfg: unknown): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(cfg, null, 2));
}

Deno.test({
  name: "e2e router: exclude (domain, CIDR, process) goes direct, the rest tunnels; block; UDP",
  ignore: !haveCurl || !canBind("127.0.0.2"),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const closers: (() => Promise<unknown> | void)[] = [];
    const dir = await Deno.makeTempDir({ prefix: "ostp-router-" });
    closers.push(() => Deno.remove(dir, { recursive: true }));
    try {
      const o1 = startOrigin("127.0.0.1");
      closers.push(() => o1.close());
      // localhost may resolve to ::1 first elsewhere: serve the same port there too.
      try {
        const o1v6 = startOrigin("::1", o1.port);
        closers.push(() => o1v6.close());
      } catch { /* no IPv6 loopback, or the port is taken there: 127.0.0.1 it is */ }
      const o2 = startOrigin("127.0.0.2");
      closers.push(() => o2.close());
      const echoDirect = startUdpEcho();
      const echoTunnel = startUdpEcho();
      const echoBlock = startUdpEcho();
      closers.push(() => echoDirect.close(), () => echoTunnel.close(), () => echoBlock.close());
      const blockedPort = freePort();
      // The renamed curl: the same program under another file name.
      const curlDirect = `${dir}/curl-direct`;
      await Deno.copyFile(CURL, curlDirect);
      await Deno.chmod(curlDirect, 0o755);

      const file = `${dir}/client.json`;
      await writeConfig(file, {
        connectTimeout: 2,
        exclude: {
          domains: ["localhost"],
          ips: ["127.0.0.2/32"],
          processes: ["curl-direct"],
        },
        rules: [
          { port: blockedPort, outbound: "block" },
          { network: "udp", port: echoDirect.port, outbound: "direct" },
          { network: "udp", port: echoBlock.port, outbound: "block" },
        ],
      });
      const server = await startServer();
      closers.push(() => server.daemon.stop());
      const client = await startClient(server.link, ["-c", file]);
      closers.push(() => client.daemon.stop());
      const p = client.proxyPort;
      const tunnelled = `http://127.0.0.1:${o1.port}`;
      const byName = `http://localhost:${o1.port}`;
      const byCidr = `http://127.0.0.2:${o2.port}`;

      const app = new Receiver();
      closers.push(() => app.close());
      const assoc = await associate(p);
      closers.push(() => assoc.ctl.close());

      await t.step("with the server up, everything loads", async () => {
        await expectBytes(socks(p), tunnelled, 300_000, 1);
        await expectBytes(socks(p), byName, 300_000, 2);
        await expectBytes(socks(p), byCidr, 300_000, 3);
        await expectBytes(httpProxy(p), byCidr, 100_000, 4);
        if (LINUX) await expectBytes(socks(p), tunnelled, 300_000, 5, curlDirect);
        assertEquals(await udpRoundTrip(app, assoc.relayPort, echoDirect.port, "d1"), "d1");
        assertEquals(await udpRoundTrip(app, assoc.relayPort, echoTunnel.port, "t1"), "t1");
      });

      await t.step("block: SOCKS5 reply 0x02, HTTP 403, UDP dropped", async () => {
        const s = await fetch(socks(p), `http://127.0.0.1:${blockedPort}/hello`);
        assertEquals(s.code, 97, s.stderr); // CURLE_PROXY: the SOCKS5 request was refused
        assert(/\(2\)|not allowed/i.test(s.stderr), s.stderr);
        const h = await fetch(httpProxy(p), `http://127.0.0.1:${blockedPort}/hello`);
        assertEquals([h.code, h.status], [0, "403"], h.stderr);
        assertEquals(await udpRoundTrip(app, assoc.relayPort, echoBlock.port, "b", 1000), null);
        const st = await client.daemon.statsDump();
        assertEquals(st.stats.routerUdp.blocked, 2, JSON.stringify(st.stats.routerUdp));
      });

      await t.step("the hit counters say which rule decided", async () => {
        const h = await hits(client.daemon);
        assertEquals(h["exclude.domains"], 1);
        assertEquals(h["exclude.ips"], 2);
        assertEquals(h["exclude.processes"], LINUX ? 1 : 0);
        assertEquals(h["rules[0]"], 2, "the blocked SOCKS5 and HTTP requests");
        assertEquals(h["rules[1]"], 1, "one UDP target, decided once");
        assertEquals(h["rules[2]"], 1);
        assertEquals(h.default, 2, "the tunnelled TCP request and UDP target");
        const text = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            `${ROOT}client/main.ts`,
            "status",
            "--control",
            client.daemon
              .controlPath!,
          ],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const out = new TextDecoder().decode(text.stdout);
        assert(/^ {2}exclude\.ips: rule 1, outbound direct, hits 2$/m.test(out), out);
      });

      await t.step(
        "with the server stopped, excluded targets load and tunnelled ones fail",
        async () => {
          await server.daemon.stop();
          await client.daemon.waitFor(/session 0 (connecting|disconnected)|stopped answering/);
          const s = await fetch(socks(p), `${tunnelled}/hello`);
          // The tunnel is down: DialError "unavailable", SOCKS5 general failure, HTTP 502.
          assertEquals(s.code, 97, `tunnelled over SOCKS5: ${s.stderr}`);
          assert(/Can't complete SOCKS5 connection .*\(1\)/.test(s.stderr), s.stderr);
          const h = await fetch(httpProxy(p), `${tunnelled}/hello`);
          assertEquals([h.code, h.status], [0, "502"], `tunnelled over HTTP: ${h.stderr}`);
          await expectBytes(socks(p), byName, 1 << 20, 6);
          await expectBytes(socks(p), byCidr, 1 << 20, 7);
          await expectBytes(httpProxy(p), byName, 200_000, 8);
          if (LINUX) {
            // The renamed curl goes direct; plain curl (above) took the tunnel and failed.
            await expectBytes(socks(p), tunnelled, 1 << 20, 9, curlDirect);
            await expectBytes(httpProxy(p), tunnelled, 200_000, 10, curlDirect);
          }
          assertEquals(await udpRoundTrip(app, assoc.relayPort, echoDirect.port, "d2"), "d2");
          assertEquals(
            await udpRoundTrip(app, assoc.relayPort, echoTunnel.port, "t2", 1000),
            null,
            "the tunnelled UDP target is unreachable now",
          );
          // A new association follows the same rules.
          const again = await associate(p);
          closers.push(() => again.ctl.close());
          assertEquals(await udpRoundTrip(app, again.relayPort, echoDirect.port, "d3"), "d3");
        },
      );
    } finally {
      for (const c of closers.reverse()) {
        try {
          await c();
        } catch { /* already closed */ }
      }
    }
  },
});

Deno.test({
  name: "e2e router: a reload switches a target's outbound without cutting a running download",
  ignore: !haveCurl,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const closers: (() => Promise<unknown> | void)[] = [];
    const dir = await Deno.makeTempDir({ prefix: "ostp-router-" });
    closers.push(() => Deno.remove(dir, { recursive: true }));
    try {
      const n = 8 << 20;
      const origin = startGatedOrigin(n, 11);
      closers.push(() => origin.close());
      closers.push(() => origin.release());
      const file = `${dir}/client.json`;
      await writeConfig(file, { connectTimeout: 2 });
      const server = await startServer();
      closers.push(() => server.daemon.stop());
      const client = await startClient(server.link, ["-c", file]);
      closers.push(() => client.daemon.stop());
      const p = client.proxyPort;
      const base = `http://127.0.0.1:${origin.port}`;

      // A download through the tunnel, rate-limited by curl, that stops halfway until released.
      let finished = false;
      const download = fetch([...socks(p), "--limit-rate", "2M"], `${base}/gated`).finally(() =>
        finished = true
      );
      await origin.half;
      assertEquals((await hits(client.daemon)).default, 1, "the download is tunnelled");

      // The target goes direct from now on (the file watcher reloads).
      let from = client.daemon.output.length;
      await writeConfig(file, { connectTimeout: 2, exclude: { ips: ["127.0.0.1/32"] } });
      await client.daemon.waitFor(/config reloaded \(file changed\): 1 rule\(s\)/, 10_000, from);
      await expectBytes(socks(p), base, 200_000, 12);
      assertEquals(await hits(client.daemon), { "exclude.ips": 1, default: 0 });

      // A bad config is refused with its reasons; the running router stays.
      from = client.daemon.output.length;
      await writeConfig(file, { exclude: { ips: ["127.0.0.1/8"] }, rules: [{ outbound: "x" }] });
      client.daemon.signal("SIGHUP");
      const refused = await client.daemon.waitFor(/config reload \(.*\) rejected/, 10_000, from);
      const line = client.daemon.output.slice(from).join("\n");
      assert(/exclude\.ips\[0\]/.test(line) && /rules\[0\]/.test(line), line);
      assert(refused.length > 0);
      let bad: unknown = null;
      try {
        await client.daemon.control({ cmd: "reload" });
      } catch (e) {
        bad = e;
      }
      assert(bad instanceof Error && /rules\[0\]/.test(bad.message), String(bad));
      await expectBytes(socks(p), base, 100_000, 13);
      assertEquals((await hits(client.daemon))["exclude.ips"], 2, "still the reloaded rules");

      // The download that started on the tunnel was running all along; it finishes there, intact.
      assert(!finished, "the download waits for the second half");
      origin.release();
      const r = await download;
      assertEquals(r.code, 0, r.stderr);
      assertEquals(r.body.length, n);
      assertEquals(await sha256Hex(r.body), await sha256Hex(payload(n, 11)));

      // Proof that the target now goes direct: it still loads with the server gone.
      await server.daemon.stop();
      await expectBytes(socks(p), base, 300_000, 14);

      // Fields other than routing need a restart, and the control socket says so.
      await writeConfig(file, { connectTimeout: 3, mux: 2, exclude: { ips: ["127.0.0.1/32"] } });
      const answer = await client.daemon.control({ cmd: "reload" });
      assertEquals(answer.needsRestart, ["mux", "connectTimeout"]);
    } finally {
      for (const c of closers.reverse()) {
        try {
          await c();
        } catch { /* already closed */ }
      }
    }
  },
});

if (!haveSquid) console.warn(`SKIP router http outbound test: ${SQUID} not installed`);

Deno.test({
  name: "e2e router: rules send flows to http outbounds through squid, with and without Basic auth",
  ignore: !haveCurl || !haveSquid,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const closers: (() => Promise<unknown> | void)[] = [];
    const dir = await Deno.makeTempDir({ prefix: "ostp-router-" });
    closers.push(() => Deno.remove(dir, { recursive: true }));
    let squidLog: string | undefined;
    try {
      const open = startOrigin("127.0.0.1");
      const authed = startOrigin("127.0.0.1");
      closers.push(() => open.close(), () => authed.close());
      const echo = startUdpEcho();
      closers.push(() => echo.close());
      const user = "ostp";
      const password = "p@ss:w0rd";
      const squid = await startSquid({ allowedPorts: [open.port, authed.port], user, password });
      let stopped = false;
      closers.push(async () => {
        if (!stopped) await squid.stop();
      });
      const file = `${dir}/client.json`;
      const outbounds = [{
        name: "squid",
        type: "http",
        url: `http://127.0.0.1:${squid.openPort}`,
      }];
      const rules: unknown[] = [
        { port: open.port, outbound: "squid" },
        { network: "udp", port: echo.port, outbound: "squid" },
      ];
      if (ncsaAuth) {
        outbounds.push({
          name: "squid-auth",
          type: "http",
          url: `http://${user}:${encodeURIComponent(password)}@127.0.0.1:${squid.authPort}`,
        });
        rules.push({ port: authed.port, outbound: "squid-auth" });
      }
      await writeConfig(file, { outbounds, rules });
      const server = await startServer();
      closers.push(() => server.daemon.stop());
      const client = await startClient(server.link, ["-c", file]);
      closers.push(() => client.daemon.stop());
      const p = client.proxyPort;

      await expectBytes(socks(p), `http://127.0.0.1:${open.port}`, 1 << 20, 21);
      await expectBytes(httpProxy(p), `http://127.0.0.1:${open.port}`, 500_000, 22);
      if (ncsaAuth) await expectBytes(socks(p), `http://127.0.0.1:${authed.port}`, 1 << 20, 23);

      // UDP routed to an http outbound is dropped, counted and said once.
      const app = new Receiver();
      closers.push(() => app.close());
      const assoc = await associate(p);
      closers.push(() => assoc.ctl.close());
      assertEquals(await udpRoundTrip(app, assoc.relayPort, echo.port, "u", 1000), null);
      await client.daemon.waitFor(/outbound squid, an http proxy, which cannot carry UDP/);
      const st = await client.daemon.statsDump();
      assertEquals(st.stats.routerUdp.noUdp, 2);
      const h = await hits(client.daemon);
      assertEquals([h["rules[0]"], h["rules[1]"]], [2, 1]);
      if (ncsaAuth) assertEquals(h["rules[2]"], 1);
      assert(!client.daemon.output.join("\n").includes(password), "the password is never logged");

      stopped = true;
      squidLog = await squid.stop();
      const lines = squidLog.split("\n");
      assertEquals(
        lines.filter((l) => l.includes(`CONNECT 127.0.0.1:${open.port} - `) && /\/200 /.test(l))
          .length,
        2,
        squidLog,
      );
      if (ncsaAuth) {
        assert(
          lines.some((l) => l.includes(`CONNECT 127.0.0.1:${authed.port} ${user} `)),
          squidLog,
        );
      }
    } finally {
      for (const c of closers.reverse()) {
        try {
          await c();
        } catch { /* already closed */ }
      }
    }
  },
});

Deno.test({
  name: "e2e router: ostp-client route explains a decision without connecting",
  ignore: !haveCurl,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ostp-router-" });
    try {
      const file = `${dir}/client.json`;
      await writeConfig(file, {
        exclude: { domains: ["localhost"], ips: ["127.0.0.2/32"], processes: ["curl-direct"] },
        rules: [{ port: 25, outbound: "block" }],
      });
      const route = async (...args: string[]) => {
        const out = await new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", `${ROOT}client/main.ts`, "route", ...args, "-c", file],
          stdout: "piped",
          stderr: "piped",
        }).output();
        return { code: out.code, text: new TextDecoder().decode(out.stdout) };
      };
      const a = await route("x.localhost:80");
      assertEquals(a.code, 0);
      assertEquals(
        a.text,
        [
          "x.localhost:80 (tcp, inbound proxy)",
          "  matches exclude.domains (rule 1 of 4)",
          "  outbound: direct",
          "",
        ].join("\n"),
      );
      const b = await route("127.0.0.1:80", "--process", "curl-direct", "--udp");
      assert(b.text.includes("matches exclude.processes") && b.text.includes("(udp,"), b.text);
      const c = await route("example.com:25");
      assert(c.text.includes("outbound: block"), c.text);
      const bad = await route("example.com");
      assertEquals(bad.code, 2);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "e2e router: the library's stats event carries the rule hits; reload() swaps the rules",
  ignore: !haveCurl,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin("127.0.0.1");
    // No server listens: only what the rules send direct can load.
    const config = parseClientConfig({
      server: `127.0.0.1:${freePort("udp")}`,
      key: formatAccessKey(generateAccessKey(), "hex"),
      listen: "127.0.0.1:0",
      connectTimeout: 1,
      control: false,
      exclude: { ips: ["127.0.0.1/32"] },
    });
    const client = new OstpClient(config, { statsIntervalMs: 100, processResolver: null });
    const seen: ClientStats[] = [];
    const off = client.events.on("stats", (s) => seen.push(s));
    try {
      await client.start();
      const p = client.proxyAddress.port;
      await expectBytes(socks(p), `http://127.0.0.1:${origin.port}`, 100_000, 31);
      const until = performance.now() + 5000;
      const hit = () => seen.at(-1)?.rules.find((r) => r.label === "exclude.ips")?.hits === 1;
      while (!hit() && performance.now() < until) await new Promise((r) => setTimeout(r, 50));
      assert(hit(), JSON.stringify(seen.at(-1)?.rules));
      assertEquals(seen.at(-1)!.routerUdp.flows, 0);
      // The same target through the (absent) tunnel after a reload: it fails now.
      const r = await client.reload(parseClientConfig({
        server: formatHostPort(config.server),
        key: formatAccessKey(config.key, "hex"),
        listen: "127.0.0.1:0",
        connectTimeout: 1,
        control: false,
      }));
      assertEquals(r, { rules: 0, needsRestart: [] });
      const f = await fetch(socks(p), `http://127.0.0.1:${origin.port}/hello`);
      assertEquals(f.code, 97, f.stderr);
      assertEquals(client.stats().rules, [
        { rule: -1, label: "default", outbound: "ostp", hits: 1 },
      ]);
    } finally {
      off();
      await client.stop();
      await origin.close();
    }
  },
});
