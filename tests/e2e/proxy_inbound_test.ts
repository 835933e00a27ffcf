/**
 * End-to-end: the real curl binary through ProxyServer (SOCKS5 and HTTP proxy
 * on one port) with the direct dialer, to a local Deno.serve origin.
 */

import { ProxyServer, type ProxyServerOptions } from "../../client/inbound/proxy_server.ts";
import { directDialer, toDialError } from "../../shared/net/direct.ts";
import { type Dialer, DialError, type Target } from "../../shared/duplex.ts";
import { dialerOutbound } from "../../client/outbound/outbound.ts";
import { which } from "../support/sh.ts";

function assertEquals(actual: unknown, expected: unknown, msg?: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${msg ?? "assertEquals"}: expected ${e}, got ${a}`);
}

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

async function sha256(data: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Deterministic pseudo-random bytes (xorshift32). */
function payload(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const BIG = payload(4 * 1024 * 1024 + 123, 7);
const BIG_HASH = await sha256(BIG);

function origin(hostname = "127.0.0.1"): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname, port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/hello") return new Response("hello world");
    if (url.pathname.startsWith("/n/")) return new Response(`n=${url.pathname.slice(3)};`);
    if (url.pathname === "/big") {
      // A stream: sent with chunked framing.
      return new Response(
        new ReadableStream({
          start(c) {
            for (let i = 0; i < BIG.length; i += 100_000) c.enqueue(BIG.slice(i, i + 100_000));
            c.close();
          },
        }),
      );
    }
    if (url.pathname === "/upload" && req.method === "POST") {
      const body = new Uint8Array(await req.arrayBuffer());
      return new Response(`${body.length} ${await sha256(body)}`);
    }
    return new Response("not found", { status: 404 });
  });
}

interface Setup {
  proxy: ProxyServer;
  proxyUrl: string;
  proxyHostPort: string;
  origin: string;
  dials: Target[];
  requests: [Target, string][];
  errors: unknown[];
}

async function withProxy(
  opts: Partial<ProxyServerOptions>,
  fn: (s: Setup) => Promise<void>,
): Promise<void> {
  const server = origin();
  const dials: Target[] = [];
  const requests: [Target, string][] = [];
  const errors: unknown[] = [];
  const dialer: Dialer = (target, signal) => {
    dials.push(target);
    return directDialer(target, signal);
  };
  const proxy = new ProxyServer({
    hostname: "127.0.0.1",
    port: 0,
    outbound: dialerOutbound(dialer),
    onError: (e) => errors.push(e),
    onRequest: (t, p) => requests.push([t, p]),
    ...opts,
  });
  await proxy.start();
  const proxyHostPort = `127.0.0.1:${proxy.addr.port}`;
  try {
    await fn({
      proxy,
      proxyUrl: `http://${proxyHostPort}`,
      proxyHostPort,
      origin: `http://127.0.0.1:${server.addr.port}`,
      dials,
      requests,
      errors,
    });
    assertEquals(errors.map(String), [], "no unexpected proxy errors");
  } finally {
    await proxy.close();
    await server.shutdown();
  }
  assertEquals(proxy.activeConnections, 0, "no live connections after close");
}

interface CurlResult {
  code: number;
  stdout: Uint8Array;
  text: string;
  stderr: string;
}

async function curl(args: string[], stdin?: Uint8Array): Promise<CurlResult> {
  const cmd = new Deno.Command("curl", {
    args: ["-sS", "--max-time", "20", ...args],
    clearEnv: true, // no http_proxy / no_proxy from the environment
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  });
  const child = cmd.spawn();
  if (stdin) {
    const w = child.stdin.getWriter();
    await w.write(stdin);
    await w.close();
  }
  const out = await child.output();
  return {
    code: out.code,
    stdout: out.stdout,
    text: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

function ok(r: CurlResult, label: string): CurlResult {
  assert(r.code === 0, `${label}: curl exited ${r.code}: ${r.stderr}`);
  return r;
}

Deno.test("e2e proxy: SOCKS5 with remote name resolution (--socks5-hostname)", async () => {
  await withProxy({}, async (s) => {
    const port = new URL(s.origin).port;
    const r = ok(
      await curl(["--socks5-hostname", s.proxyHostPort, `http://localhost:${port}/hello`]),
      "socks5h",
    );
    assertEquals(r.text, "hello world");
    assertEquals(s.requests, [[{ host: "localhost", port: Number(port) }, "socks5"]]);
  });
});

Deno.test("e2e proxy: SOCKS5 with an IPv4 address (--socks5), 4 MiB download", async () => {
  await withProxy({}, async (s) => {
    const r = ok(await curl(["--socks5", s.proxyHostPort, `${s.origin}/big`]), "socks5");
    assertEquals(await sha256(r.stdout), BIG_HASH);
    const port = Number(new URL(s.origin).port);
    assertEquals(s.requests, [[{ host: "127.0.0.1", port }, "socks5"]]);
  });
});

Deno.test("e2e proxy: HTTP proxy plain GET and chunked 4 MiB download", async () => {
  await withProxy({}, async (s) => {
    assertEquals(
      ok(await curl(["-x", s.proxyUrl, `${s.origin}/hello`]), "get").text,
      "hello world",
    );
    const r = ok(await curl(["-x", s.proxyUrl, `${s.origin}/big`]), "big");
    assertEquals(await sha256(r.stdout), BIG_HASH);
    const missing = await curl([
      "-x",
      s.proxyUrl,
      "-w",
      "%{http_code}",
      "-o",
      "/dev/null",
      `${s.origin}/nope`,
    ]);
    assertEquals(missing.text, "404");
  });
});

Deno.test("e2e proxy: HTTP CONNECT tunnel (-p)", async () => {
  await withProxy({}, async (s) => {
    const r = ok(await curl(["-p", "-x", s.proxyUrl, `${s.origin}/hello`]), "connect");
    assertEquals(r.text, "hello world");
    const big = ok(await curl(["-p", "-x", s.proxyUrl, `${s.origin}/big`]), "connect big");
    assertEquals(await sha256(big.stdout), BIG_HASH);
    assertEquals(s.requests.map(([, p]) => p), ["http", "http"]);
  });
});

Deno.test("e2e proxy: POST uploads (Content-Length with 100-continue, and chunked) are checked by the origin", async () => {
  await withProxy({}, async (s) => {
    const body = payload(3 * 1024 * 1024 + 5, 42);
    const expected = `${body.length} ${await sha256(body)}`;
    const file = await Deno.makeTempFile();
    try {
      await Deno.writeFile(file, body);
      const viaHttp = ok(
        await curl(["-x", s.proxyUrl, "--data-binary", `@${file}`, `${s.origin}/upload`]),
        "post http",
      );
      assertEquals(viaHttp.text, expected);
      const viaSocks = ok(
        await curl([
          "--socks5",
          s.proxyHostPort,
          "--data-binary",
          `@${file}`,
          `${s.origin}/upload`,
        ]),
        "post socks",
      );
      assertEquals(viaSocks.text, expected);
    } finally {
      await Deno.remove(file);
    }
    const chunked = ok(
      await curl(
        [
          "-x",
          s.proxyUrl,
          "-H",
          "Transfer-Encoding: chunked",
          "--data-binary",
          "@-",
          `${s.origin}/upload`,
        ],
        body,
      ),
      "post chunked",
    );
    assertEquals(chunked.text, expected);
  });
});

Deno.test("e2e proxy: keep-alive carries several requests on one client connection", async () => {
  await withProxy({}, async (s) => {
    const urls = [1, 2, 3, 4].map((i) => `${s.origin}/n/${i}`);
    const r = ok(await curl(["-x", s.proxyUrl, ...urls]), "keep-alive");
    assertEquals(r.text, "n=1;n=2;n=3;n=4;");
    assertEquals(s.proxy.acceptedConnections, 1, "one client connection to the proxy");
    assertEquals(s.dials.length, 1, "one upstream connection reused");

    // Alternating origins: still one client connection, a new dial per switch.
    const other = origin();
    try {
      const o2 = `http://127.0.0.1:${other.addr.port}`;
      const r2 = ok(
        await curl(["-x", s.proxyUrl, `${s.origin}/n/a`, `${o2}/n/b`, `${s.origin}/n/c`]),
        "two origins",
      );
      assertEquals(r2.text, "n=a;n=b;n=c;");
      assertEquals(s.proxy.acceptedConnections, 2);
      assertEquals(s.dials.length, 4);
    } finally {
      await s.proxy.close(); // drops the upstream kept alive toward `other`
      await other.shutdown();
    }
  });
});

const HAVE_AB = await which("ab");
if (!HAVE_AB) console.log("SKIPPED e2e proxy: HTTP/1.0 keep-alive with ab -k (ab not installed)");

Deno.test({
  name: "e2e proxy: HTTP/1.0 keep-alive with ApacheBench (ab -k -X): every request kept alive",
  ignore: !HAVE_AB,
  fn: async () => {
    await withProxy({}, async (s) => {
      const out = await new Deno.Command("ab", {
        args: ["-k", "-q", "-X", s.proxyHostPort, "-n", "200", "-c", "4", `${s.origin}/hello`],
        clearEnv: true,
        env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      const field = (name: string) => {
        const m = text.match(new RegExp(`^${name}:\\s+(\\d+)`, "m"));
        if (!m) {
          throw new Error(
            `ab printed no "${name}":\n${text}\n${new TextDecoder().decode(out.stderr)}`,
          );
        }
        return Number(m[1]);
      };
      assert(out.success, `ab exited ${out.code}: ${new TextDecoder().decode(out.stderr)}`);
      assertEquals(field("Complete requests"), 200, "complete requests");
      assertEquals(field("Failed requests"), 0, "failed requests");
      assertEquals(field("Keep-Alive requests"), 200, "keep-alive requests");
      assert(
        s.proxy.acceptedConnections <= 4,
        `at most one proxy connection per ab worker, got ${s.proxy.acceptedConnections}`,
      );
      assert(s.dials.length <= 4, `upstreams reused, got ${s.dials.length} dials`);
    });
  },
});

Deno.test("e2e proxy: credentials for HTTP proxy and SOCKS5", async () => {
  const auth = { username: "alice", password: "pa:ss wörd" };
  await withProxy({ auth }, async (s) => {
    const user = `${auth.username}:${auth.password}`;
    const good = ok(
      await curl(["-x", s.proxyUrl, "--proxy-user", user, `${s.origin}/hello`]),
      "auth",
    );
    assertEquals(good.text, "hello world");
    const tunnel = ok(
      await curl(["-p", "-x", s.proxyUrl, "--proxy-user", user, `${s.origin}/hello`]),
      "auth connect",
    );
    assertEquals(tunnel.text, "hello world");
    const none = await curl([
      "-x",
      s.proxyUrl,
      "-w",
      "%{http_code}",
      "-o",
      "/dev/null",
      `${s.origin}/hello`,
    ]);
    assertEquals(none.text, "407");
    const wrong = await curl([
      "-x",
      s.proxyUrl,
      "--proxy-user",
      "alice:nope",
      "-w",
      "%{http_code}",
      "-o",
      "/dev/null",
      `${s.origin}/hello`,
    ]);
    assertEquals(wrong.text, "407");
    const socks = ok(
      await curl(["--socks5", s.proxyHostPort, "--proxy-user", user, `${s.origin}/hello`]),
      "socks auth",
    );
    assertEquals(socks.text, "hello world");
    const socksWrong = await curl([
      "--socks5",
      s.proxyHostPort,
      "--proxy-user",
      "alice:nope",
      `${s.origin}/hello`,
    ]);
    assert(socksWrong.code !== 0 && socksWrong.code !== 28, `socks bad auth: ${socksWrong.code}`);
    const socksNone = await curl(["--socks5", s.proxyHostPort, `${s.origin}/hello`]);
    assert(socksNone.code !== 0 && socksNone.code !== 28, `socks no auth: ${socksNone.code}`);
    assertEquals(s.dials.length, 3, "no dial without valid credentials");
  });
});

Deno.test("e2e proxy: a refused target gives a proxy error, not a hang", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  const target = `http://127.0.0.1:${port}/`;
  await withProxy({}, async (s) => {
    const socks = await curl(["--socks5", s.proxyHostPort, target]);
    // 97 = CURLE_PROXY (curl ≥ 7.73), 7 = couldn't connect on older versions; 28 would be a timeout.
    assert(socks.code === 97 || socks.code === 7, `socks5: exit ${socks.code} ${socks.stderr}`);
    assert(/\(5\)|refused/i.test(socks.stderr), `socks5 reply 5 expected: ${socks.stderr}`);
    const get = await curl(["-x", s.proxyUrl, "-w", "%{http_code}", "-o", "/dev/null", target]);
    assertEquals([get.code, get.text], [0, "502"]);
    const tunnel = await curl(["-p", "-x", s.proxyUrl, target]);
    assert(tunnel.code === 56, `CONNECT: exit ${tunnel.code} ${tunnel.stderr}`);
    assert(/502/.test(tunnel.stderr), `CONNECT stderr: ${tunnel.stderr}`);
    assertEquals(s.dials.length, 3);
  });
});

Deno.test("e2e proxy: IPv6 target through SOCKS5 and CONNECT", async () => {
  let v6: Deno.HttpServer<Deno.NetAddr>;
  try {
    v6 = origin("::1");
  } catch (e) {
    console.log(`skipped: no IPv6 loopback here (${e})`);
    return;
  }
  try {
    await withProxy({}, async (s) => {
      const url = `http://[::1]:${v6.addr.port}/hello`;
      assertEquals(
        ok(await curl(["--socks5-hostname", s.proxyHostPort, url]), "v6 socks").text,
        "hello world",
      );
      assertEquals(ok(await curl(["-p", "-x", s.proxyUrl, url]), "v6 connect").text, "hello world");
      assertEquals(ok(await curl(["-x", s.proxyUrl, url]), "v6 get").text, "hello world");
      for (const [t] of s.requests) assertEquals(t.host, "::1");
    });
  } finally {
    await v6.shutdown();
  }
});

Deno.test("e2e proxy: silent and stalled clients are dropped at the handshake timeout", async () => {
  await withProxy({ handshakeTimeoutMs: 150 }, async (s) => {
    const read = async (conn: Deno.Conn) => {
      const buf = new Uint8Array(64);
      let got = 0;
      while (true) {
        const n = await conn.read(buf.subarray(got)).catch(() => null);
        if (n === null) return buf.subarray(0, got);
        got += n;
      }
    };
    const silent = await Deno.connect({ hostname: "127.0.0.1", port: s.proxy.addr.port });
    assertEquals((await read(silent)).length, 0);
    silent.close();
    const stalled = await Deno.connect({ hostname: "127.0.0.1", port: s.proxy.addr.port });
    await stalled.write(new TextEncoder().encode("GET http://127.0.0.1/ HTTP/1.1\r\nHost: x"));
    assertEquals((await read(stalled)).length, 0);
    stalled.close();
    const socks = await Deno.connect({ hostname: "127.0.0.1", port: s.proxy.addr.port });
    await socks.write(Uint8Array.of(5, 1, 0));
    assertEquals([...(await read(socks))], [5, 0]);
    socks.close();
    assertEquals(s.dials.length, 0);
  });
});

Deno.test("e2e proxy: close() ends live tunnels and leaves nothing open", async () => {
  await withProxy({}, async (s) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.proxy.addr.port });
    const host = new URL(s.origin).host;
    await conn.write(new TextEncoder().encode(`CONNECT ${host} HTTP/1.1\r\n\r\n`));
    const buf = new Uint8Array(1024);
    const n = await conn.read(buf);
    assert(n !== null, "CONNECT answered");
    assert(
      new TextDecoder().decode(buf.subarray(0, n)).startsWith("HTTP/1.1 200"),
      "tunnel established",
    );
    // An idle keep-alive HTTP client as well.
    const idle = await Deno.connect({ hostname: "127.0.0.1", port: s.proxy.addr.port });
    await idle.write(new TextEncoder().encode(`GET ${s.origin}/hello HTTP/1.1\r\n\r\n`));
    const m = await idle.read(buf);
    assert(
      m !== null && new TextDecoder().decode(buf.subarray(0, m)).includes("hello world"),
      "GET",
    );
    assertEquals(s.proxy.activeConnections, 2);
    await s.proxy.close();
    assertEquals(s.proxy.activeConnections, 0);
    assertEquals(await conn.read(buf).catch(() => null), null);
    assertEquals(await idle.read(buf).catch(() => null), null);
    conn.close();
    idle.close();
  });
});

Deno.test("e2e proxy: the direct dialer maps connect errors to DialError reasons", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  try {
    const c = await directDialer({ host: "127.0.0.1", port });
    c.close();
    throw new Error("connected to a closed port");
  } catch (e) {
    assert(e instanceof DialError && e.reason === "refused", `refused: ${e}`);
  }
  const table: [unknown, string][] = [
    [new Deno.errors.ConnectionRefused("x"), "refused"],
    [new Deno.errors.TimedOut("x"), "timeout"],
    [new Deno.errors.NotFound("x"), "dns"],
    [new Error("failed to lookup address information: Name or service not known"), "dns"],
    [new URIError("invalid host 'a b'"), "dns"],
    [new Deno.errors.NetworkUnreachable("x"), "unreachable"],
    [new Error("No route to host (os error 113)"), "unreachable"],
    [new Deno.errors.NotCapable("x"), "denied"],
    [new Error("something else"), "general"],
    [new DialError("unavailable"), "unavailable"],
  ];
  for (const [e, reason] of table) assertEquals(toDialError(e).reason, reason, String(e));
  const aborted = new AbortController();
  aborted.abort();
  try {
    (await directDialer({ host: "127.0.0.1", port }, aborted.signal)).close();
    throw new Error("dialed with an aborted signal");
  } catch (e) {
    assert(e instanceof DialError, `aborted: ${e}`);
  }
});
