/**
 * Unit tests of the client's outbounds (issue 8): block answers, the http
 * outbound's proxy URL parser, CONNECT request and answer handling over an
 * in-memory duplex, and the ostp adapter over a fake pool.
 */

import { BlockOutbound } from "../../client/outbound/block.ts";
import {
  basicAuthorization,
  describeProxy,
  dialErrorForStatus,
  encodeConnectRequest,
  HttpConnectOutbound,
  type HttpProxyUrl,
  parseProxyUrl,
  ProxyUrlError,
} from "../../client/outbound/http_connect.ts";
import { OstpOutbound, type TunnelPool } from "../../client/outbound/ostp_outbound.ts";
import type { OstpPool } from "../../client/outbound/ostp.ts";
import type { FlowContext, UdpFlow } from "../../client/outbound/outbound.ts";
import { Socks5Reply, socks5ReplyForError } from "../../client/inbound/socks5.ts";
import { httpStatusForDialError } from "../../client/inbound/http.ts";
import { DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import { BufferedReader, decodeLatin1, duplexPair, writeAll } from "../../shared/pipe.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../support/assert.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function ctx(host: string, port: number, network: "tcp" | "udp" = "tcp"): FlowContext {
  return { inbound: "socks", network, target: { host, port } };
}

async function dialError(p: () => Promise<unknown>): Promise<DialError> {
  return (await assertRejects(p, DialError)) as DialError;
}

// ---- block ----

Deno.test("block: TCP is refused as denied → SOCKS5 0x02, HTTP 403", async () => {
  const b = new BlockOutbound();
  assertEquals(b.name, "block");
  const e = await dialError(() => b.dial(ctx("example.com", 443)));
  assertEquals(e.reason, "denied");
  assertEquals(socks5ReplyForError(e), Socks5Reply.NotAllowed);
  assertEquals(socks5ReplyForError(e), 0x02);
  assertEquals(httpStatusForDialError(e), 403);
  assert(e.message.includes("example.com:443"), e.message);
});

Deno.test("block: UDP is refused as denied, and the reply handler never runs", async () => {
  const b = new BlockOutbound("ads");
  let replies = 0;
  const e = await dialError(() => b.openUdp(ctx("::1", 53, "udp"), () => replies++));
  assertEquals(e.reason, "denied");
  assert(e.message.includes('"ads"') && e.message.includes("[::1]:53"), e.message);
  assertEquals(replies, 0);
});

// ---- proxy URL ----

Deno.test("parseProxyUrl: accepted forms and defaults", () => {
  assertEquals(parseProxyUrl("http://proxy.example:3128"), {
    secure: false,
    host: "proxy.example",
    port: 3128,
  });
  assertEquals(parseProxyUrl("http://proxy.example"), {
    secure: false,
    host: "proxy.example",
    port: 80,
  });
  assertEquals(parseProxyUrl("HTTPS://10.0.0.1/"), { secure: true, host: "10.0.0.1", port: 443 });
  assertEquals(parseProxyUrl("http://[::1]:8080"), { secure: false, host: "::1", port: 8080 });
  assertEquals(parseProxyUrl("http://alice:s3cret@127.0.0.1:3128"), {
    secure: false,
    host: "127.0.0.1",
    port: 3128,
    credentials: { username: "alice", password: "s3cret" },
  });
  // Percent-decoding of both parts; a raw ":" after the first belongs to the password.
  assertEquals(
    parseProxyUrl("http://bob%40corp:p%40ss%3Aw%25rd:x@h:1")?.credentials,
    { username: "bob@corp", password: "p@ss:w%rd:x" },
  );
  assertEquals(parseProxyUrl("http://u%C3%A9@h:1")?.credentials, {
    username: "ué",
    password: "",
  });
  assertEquals(parseProxyUrl("http://u:@h:1")?.credentials, { username: "u", password: "" });
});

Deno.test("parseProxyUrl: bad URLs are refused without echoing the password", () => {
  const secret = "Pa55word";
  const bad: [string, string][] = [
    ["", "empty"],
    [`alice:${secret}@proxy:3128`, "expected"],
    [`socks5://alice:${secret}@proxy:1080`, "scheme"],
    [`ftp://proxy`, "scheme"],
    [`http://alice:${secret}@proxy:3128/path`, "no path"],
    [`http://alice:${secret}@proxy:3128?q=1`, "no path"],
    [`http://alice:${secret}@proxy:3128#frag`, "no path"],
    [`http://alice:${secret}@`, "host is missing"],
    [`http://alice:${secret}@:3128`, "host"],
    [`http://alice:${secret}@proxy:0`, "port"],
    [`http://alice:${secret}@proxy:70000`, "port"],
    [`http://alice:${secret}@proxy:`, "port"],
    [`http://alice:${secret}@proxy:31x8`, "port"],
    [`http://alice:${secret}@@proxy:3128`, "%40"],
    [`http://alice:${secret}@x@proxy:3128`, "%40"],
    [`http://alice:${secret}%zz@proxy:3128`, "percent-encoding"],
    [`http://alice:${secret}%0a@proxy:3128`, "control"],
    [`http://al%3Aice:${secret}@proxy:3128`, '":"'],
    [`http://:${secret}@proxy:3128`, "user name is empty"],
    [`http://alice:${secret} @proxy:3128`, "spaces"],
    [`http://alice:${secret}\r\n@proxy:3128`, "control"],
    [`http://alice:pässword@proxy:3128`, "non-ASCII"],
    [`http://alice:${secret}"@proxy:3128`, "percent-encode"],
    [`http://alice:${secret}@::1:3128`, "IPv6"],
    [`http://alice:${secret}@[::1`, "]"],
    [`http://alice:${secret}@[zz::1]:3128`, "IPv6"],
    [`http://alice:${secret}@bad_host!:3128`, "host"],
    ["http://" + "a".repeat(3000), "too long"],
  ];
  for (const [url, why] of bad) {
    const e = assertThrows(() => parseProxyUrl(url), ProxyUrlError);
    assert(e.message.startsWith("invalid proxy URL: "), e.message);
    assert(e.message.includes(why), `${JSON.stringify(url)}: "${e.message}" lacks "${why}"`);
    assert(!e.message.includes(secret), `secret echoed: ${e.message}`);
    assert(!e.message.includes("alice"), `user echoed: ${e.message}`);
  }
});

Deno.test("describeProxy never shows the password", () => {
  const p = parseProxyUrl("https://a%20b:topsecret@[2001:db8::1]:8443");
  assertEquals(describeProxy(p), "https://a%20b@[2001:db8::1]:8443");
  const o = new HttpConnectOutbound({ proxy: "http://u:topsecret@127.0.0.1:3128" });
  assertEquals(o.proxy, "http://u@127.0.0.1:3128");
  assert(!Deno.inspect(o, { depth: 5 }).includes("topsecret"), Deno.inspect(o));
  assertThrows(() => new HttpConnectOutbound({ proxy: "http://u:topsecret@" }), ProxyUrlError);
});

// ---- CONNECT request ----

Deno.test("encodeConnectRequest: request line, Host, Basic auth (RFC 7617 example)", () => {
  assertEquals(basicAuthorization("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
  // UTF-8 (RFC 7617 §2.1 charset): "test:123£".
  assertEquals(basicAuthorization("test", "123\u00a3"), "Basic dGVzdDoxMjPCow==");
  assertEquals(
    decodeLatin1(encodeConnectRequest({ host: "example.com", port: 443 })),
    "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
  );
  assertEquals(
    decodeLatin1(encodeConnectRequest({ host: "2001:db8::1", port: 22 }, "Basic eDp5")),
    "CONNECT [2001:db8::1]:22 HTTP/1.1\r\nHost: [2001:db8::1]:22\r\n" +
      "Proxy-Authorization: Basic eDp5\r\n\r\n",
  );
  for (
    const t of [
      { host: "evil.com\r\nX-Injected: 1", port: 80 },
      { host: "a b", port: 80 },
      { host: "", port: 80 },
      { host: "1:2:3", port: 80 },
      { host: "ok.example", port: 0 },
      { host: "ok.example", port: 65536 },
    ]
  ) {
    const e = assertThrows(() => encodeConnectRequest(t), DialError) as DialError;
    assertEquals(e.reason, "general");
  }
});

// ---- CONNECT answers over an in-memory duplex ----

interface FakeProxy {
  outbound: HttpConnectOutbound;
  /** The proxy's side of each connection, in order. */
  conns: Promise<Duplex>[];
}

/** An outbound whose "proxy connections" are duplexPair ends handed to `serve`. */
function fakeProxy(
  serve: (proxySide: Duplex, requestHead: string) => Promise<void>,
  opts: { proxy?: string; connectTimeoutMs?: number; maxHeadBytes?: number } = {},
): FakeProxy {
  const conns: Promise<Duplex>[] = [];
  const outbound = new HttpConnectOutbound({
    proxy: opts.proxy ?? "http://127.0.0.1:3128",
    connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
    maxHeadBytes: opts.maxHeadBytes,
    connect: (proxy: HttpProxyUrl, _signal: AbortSignal) => {
      assertEquals(proxy.port, 3128);
      const [client, server] = duplexPair();
      conns.push((async () => {
        const r = new BufferedReader(server);
        let head = "";
        for (;;) {
          const line = await r.readLine(8192);
          if (line === null || line === "") break;
          head += line + "\n";
        }
        await serve(r, head);
        return r as Duplex;
      })());
      return Promise.resolve(client);
    },
  });
  return { outbound, conns };
}

async function readN(d: Duplex, n: number): Promise<string> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const k = await d.read(buf.subarray(got));
    if (k === null) break;
    got += k;
  }
  return dec.decode(buf.subarray(0, got));
}

Deno.test("http outbound: 200 → tunnel; bytes after the head are not lost", async () => {
  let seen = "";
  const fp = fakeProxy(async (s, head) => {
    seen = head;
    // The head and the first tunnel bytes in one write, as a fast origin makes happen.
    await writeAll(s, enc.encode("HTTP/1.1 200 Connection established\r\n\r\nEARLY"));
  }, { proxy: "http://alice:wonder%20land@127.0.0.1:3128" });
  const tunnel = await fp.outbound.dial(ctx("origin.test", 8080));
  const proxySide = await fp.conns[0];
  assertEquals(
    seen,
    "CONNECT origin.test:8080 HTTP/1.1\nHost: origin.test:8080\n" +
      `Proxy-Authorization: ${basicAuthorization("alice", "wonder land")}\n`,
  );
  assertEquals(await readN(tunnel, 5), "EARLY");
  // Both directions carry bytes afterwards, and half-close propagates.
  await writeAll(tunnel, enc.encode("ping"));
  assertEquals(await readN(proxySide, 4), "ping");
  await writeAll(proxySide, enc.encode("pong"));
  await proxySide.closeWrite();
  assertEquals(await readN(tunnel, 100), "pong");
  await tunnel.closeWrite();
  assertEquals(await proxySide.read(new Uint8Array(8)), null);
  tunnel.close();
});

Deno.test("http outbound: 2xx with headers and a 1xx first; no trailing bytes → raw stream", async () => {
  const fp = fakeProxy(async (s) => {
    await writeAll(s, enc.encode("HTTP/1.1 100 Continue\r\n\r\n"));
    await writeAll(s, enc.encode("HTTP/1.0 200 OK\r\nVia: 1.1 p\r\nContent-Length: 99\r\n\r\n"));
  });
  const tunnel = await fp.outbound.dial(ctx("10.1.2.3", 22));
  const proxySide = await fp.conns[0];
  await writeAll(proxySide, enc.encode("SSH-2.0-x\r\n"));
  assertEquals(await readN(tunnel, 11), "SSH-2.0-x\r\n");
  tunnel.close();
});

async function answerWith(answer: string, proxy?: string): Promise<DialError> {
  const fp = fakeProxy(async (s) => {
    await writeAll(s, enc.encode(answer));
    await s.closeWrite();
  }, { proxy });
  const e = await dialError(() => fp.outbound.dial(ctx("origin.test", 80)));
  const proxySide = await fp.conns[0];
  // The outbound closed its end: the proxy side reads EOF.
  assertEquals(await proxySide.read(new Uint8Array(8)), null);
  return e;
}

Deno.test("http outbound: 407 → denied, 'proxy authentication failed'", async () => {
  const withCreds = await answerWith(
    "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=x\r\n" +
      "Content-Length: 5\r\n\r\nnope!",
    "http://u:hunter2@127.0.0.1:3128",
  );
  assertEquals(withCreds.reason, "denied");
  assertEquals(withCreds.message, "proxy authentication failed");
  assertEquals(socks5ReplyForError(withCreds), 0x02);
  assertEquals(httpStatusForDialError(withCreds), 403);
  const without = await answerWith("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
  assertEquals(without.reason, "denied");
  assert(without.message.includes("proxy authentication required"), without.message);
});

Deno.test("http outbound: statuses map to DialError reasons", async () => {
  const cases: [string, string][] = [
    ["HTTP/1.1 403 Forbidden\r\n\r\n", "denied"],
    ["HTTP/1.1 502 Bad Gateway\r\n\r\n", "unreachable"],
    ["HTTP/1.1 503 Service Unavailable\r\n\r\n", "refused"],
    ["HTTP/1.1 504 Gateway Timeout\r\n\r\n", "timeout"],
    ["HTTP/1.1 500 Internal Server Error\r\n\r\n", "general"],
    ["HTTP/1.1 404 Not Found\r\n\r\n", "general"],
    ["HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\n", "general"],
    ["HTTP/1.1 101 Switching Protocols\r\n\r\n", "general"],
    ["HTTP/1.1 503 x\r\nX-Squid-Error: ERR_DNS_FAIL 0\r\n\r\n", "dns"],
    ["HTTP/1.1 503 x\r\nX-Squid-Error: ERR_CONNECT_FAIL 111\r\n\r\n", "refused"],
    ["HTTP/1.1 503 x\r\nX-Squid-Error: ERR_CONNECT_FAIL 110\r\n\r\n", "timeout"],
    ["HTTP/1.1 503 x\r\nX-Squid-Error: ERR_CONNECT_FAIL 113\r\n\r\n", "unreachable"],
  ];
  for (const [answer, reason] of cases) {
    const e = await answerWith(answer);
    assertEquals(e.reason, reason, answer.split("\r\n")[0] + " / " + e.message);
  }
  assertEquals(dialErrorForStatus(504, [["x-squid-error", "ERR_DNS_FAIL 0"]], false).reason, "dns");
  // The header only refines 5xx answers.
  assertEquals(
    dialErrorForStatus(403, [["X-Squid-Error", "ERR_DNS_FAIL 0"]], false).reason,
    "denied",
  );
});

Deno.test("http outbound: garbage, truncated and oversized answers → general", async () => {
  const garbage = [
    "SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "HTTP/1.1 2000 OK\r\n\r\n",
    "HTTP/2 200\r\n\r\n",
    "HTTP/1.1 20 OK\r\n\r\n",
    "HTTP/1.1 099 x\r\n\r\n",
    "HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", // ends inside the head
    "", // closes without an answer
    "HTTP/1.1 100 Continue\r\n\r\n".repeat(6) + "HTTP/1.1 200 OK\r\n\r\n",
  ];
  for (const answer of garbage) {
    const e = await answerWith(answer);
    assertEquals(e.reason, "general", JSON.stringify(answer.slice(0, 30)) + " / " + e.message);
  }
  // A head larger than the bound: many headers, or one endless line.
  const big = "HTTP/1.1 200 OK\r\n" + "X-Pad: 0123456789abcdef\r\n".repeat(1000) + "\r\n";
  const e1 = await answerWith(big);
  assertEquals(e1.reason, "general");
  assert(e1.message.includes("too large"), e1.message);
  const e2 = await answerWith("HTTP/1.1 200 " + "x".repeat(40_000));
  assertEquals(e2.reason, "general");
  assert(e2.message.includes("too large"), e2.message);
});

Deno.test("http outbound: a head just under the bound is accepted", async () => {
  const head = "HTTP/1.1 200 OK\r\nX-Pad: " + "p".repeat(900) + "\r\n\r\n";
  const fp = fakeProxy((s) => writeAll(s, enc.encode(head + "tail")), {
    maxHeadBytes: head.length,
  });
  const tunnel = await fp.outbound.dial(ctx("origin.test", 80));
  assertEquals(await readN(tunnel, 4), "tail");
  tunnel.close();
  const fp2 = fakeProxy((s) => writeAll(s, enc.encode(head)), { maxHeadBytes: head.length - 10 });
  assertEquals(
    (await dialError(() => fp2.outbound.dial(ctx("origin.test", 80)))).reason,
    "general",
  );
});

Deno.test("http outbound: no answer in time → timeout, connection closed", async () => {
  const fp = fakeProxy(() => Promise.resolve(), { connectTimeoutMs: 50 });
  // The outbound's timeout timer is unref'd (a real socket keeps a daemon alive); an
  // in-memory duplex does not, so this test holds the event loop open itself.
  const keepAlive = setInterval(() => {}, 1000);
  let e: DialError;
  try {
    e = await dialError(() => fp.outbound.dial(ctx("origin.test", 80)));
  } finally {
    clearInterval(keepAlive);
  }
  assertEquals(e.reason, "timeout");
  assertEquals(socks5ReplyForError(e), Socks5Reply.HostUnreachable);
  assertEquals(httpStatusForDialError(e), 504);
  assertEquals(await (await fp.conns[0]).read(new Uint8Array(8)), null);
});

Deno.test("http outbound: the caller's abort ends the dial and closes the connection", async () => {
  const fp = fakeProxy(() => Promise.resolve());
  const ac = new AbortController();
  const p = fp.outbound.dial(ctx("origin.test", 80), ac.signal);
  const proxySide = await fp.conns[0];
  ac.abort();
  const e = await dialError(() => p);
  assertEquals(e.reason, "general");
  assertEquals(await proxySide.read(new Uint8Array(8)), null);
  // Already aborted: nothing is opened.
  const before = fp.conns.length;
  await dialError(() => fp.outbound.dial(ctx("origin.test", 80), ac.signal));
  assertEquals(fp.conns.length, before);
});

Deno.test("http outbound: an unreachable proxy → unavailable, without the password", async () => {
  const o = new HttpConnectOutbound({
    proxy: "http://u:hunter2@127.0.0.1:3128",
    connect: () => Promise.reject(new Deno.errors.ConnectionRefused("Connection refused")),
  });
  const e = await dialError(() => o.dial(ctx("origin.test", 80)));
  assertEquals(e.reason, "unavailable");
  assert(e.message.includes("127.0.0.1:3128") && !e.message.includes("hunter2"), e.message);
});

Deno.test("http outbound: UDP is refused with a clear message", async () => {
  const o = new HttpConnectOutbound({ proxy: "http://127.0.0.1:3128" });
  const e = await dialError(() => o.openUdp(ctx("8.8.8.8", 53, "udp"), () => {}));
  assertEquals(e.message, "the http outbound cannot carry UDP");
});

// ---- ostp adapter ----

class FakePool implements TunnelPool {
  dialed: Target[] = [];
  flows = 0;
  release: (() => void) | null = null;
  lastStream: Duplex | null = null;
  closedStreams = 0;
  dial = async (target: Target): Promise<Duplex> => {
    this.dialed.push(target);
    if (target.host === "slow.test") await new Promise<void>((r) => this.release = r);
    if (target.host === "down.test") throw new DialError("unavailable", "tunnel is not connected");
    const [a] = duplexPair();
    const close = a.close.bind(a);
    a.close = () => {
      this.closedStreams++;
      close();
    };
    this.lastStream = a;
    return a;
  };
  openUdpFlow = (onReply: (from: Target, data: Uint8Array) => void): Promise<UdpFlow> => {
    this.flows++;
    return Promise.resolve({
      send: (t, d) => {
        onReply(t, d);
        return true;
      },
      close: () => {},
    });
  };
}

Deno.test("ostp outbound: dial and openUdp go to the pool", async () => {
  // Compile-time check: the real pool satisfies the adapter's interface.
  const _pool: (p: OstpPool) => TunnelPool = (p) => p;
  const pool = new FakePool();
  const o = new OstpOutbound(pool);
  assertEquals(o.name, "ostp");
  const s = await o.dial(ctx("example.org", 443));
  assertEquals(pool.dialed, [{ host: "example.org", port: 443 }]);
  assert(s === pool.lastStream);
  const e = await dialError(() => o.dial(ctx("down.test", 1)));
  assertEquals(e.reason, "unavailable");
  const got: string[] = [];
  const flow = await o.openUdp(
    ctx("0.0.0.0", 0, "udp"),
    (f, d) => got.push(`${f.host} ${dec.decode(d)}`),
  );
  assert(flow.send({ host: "1.1.1.1", port: 53 }, enc.encode("q")));
  assertEquals(got, ["1.1.1.1 q"]);
  assertEquals(pool.flows, 1);
});

Deno.test("ostp outbound: an abort rejects at once; the late stream is closed", async () => {
  const pool = new FakePool();
  const o = new OstpOutbound(pool);
  const ac = new AbortController();
  const p = o.dial(ctx("slow.test", 80), ac.signal);
  await new Promise((r) => setTimeout(r, 0));
  ac.abort();
  const e = await dialError(() => p);
  assertEquals(e.reason, "general");
  pool.release!();
  await new Promise((r) => setTimeout(r, 0));
  assertEquals(pool.closedStreams, 1);
  await dialError(() => o.dial(ctx("example.org", 80), ac.signal));
  assertEquals(pool.dialed.length, 1);
});
