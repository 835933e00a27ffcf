import {
  checkProxyAuthorization,
  handleHttpProxy,
  httpStatusForDialError,
  parseAbsoluteTarget,
  parseAuthority,
  type ProxyCredentials,
  readRequestHead,
  readResponseHead,
  type RequestHead,
  type ResponseHead,
  stripHopByHop,
} from "../../client/inbound/http.ts";
import { DialError, type DialFailure, type Duplex, type Target } from "../../shared/duplex.ts";
import { dialerOutbound } from "../../client/outbound/outbound.ts";
import {
  BufferedReader,
  decodeLatin1,
  duplexPair,
  encodeLatin1,
  LineTooLongError,
  relay,
} from "../../shared/pipe.ts";

function assertEquals(actual: unknown, expected: unknown, msg?: string): void {
  const a = JSON.stringify(actual, (_k, v) => v instanceof Uint8Array ? [...v] : v);
  const e = JSON.stringify(expected, (_k, v) => v instanceof Uint8Array ? [...v] : v);
  if (a !== e) throw new Error(`${msg ?? "assertEquals"}: expected ${e}, got ${a}`);
}

async function assertRejects(
  f: () => Promise<unknown>,
  cls: abstract new (...args: any[]) => Error,
) {
  try {
    await f();
  } catch (e) {
    if (e instanceof cls) return;
    throw new Error(`expected ${cls.name}, got ${e}`);
  }
  throw new Error(`expected ${cls.name}, got no error`);
}

const text = (s: string) => encodeLatin1(s);

async function readAll(d: Duplex): Promise<string> {
  let s = "";
  const buf = new Uint8Array(4096);
  try {
    while (true) {
      const n = await d.read(buf);
      if (n === null) break;
      s += decodeLatin1(buf.subarray(0, n));
    }
  } catch {
    // closed
  }
  return s;
}

interface Origin {
  conn: Duplex;
  r: BufferedReader;
}

interface Harness {
  client: Duplex;
  /** Reads what the proxy sends to the client. */
  r: BufferedReader;
  done: Promise<void>;
  dials: Target[];
  errors: unknown[];
  origins: Origin[];
  /** Resolves with the next origin to be dialed. */
  nextOrigin(): Promise<Origin>;
}

function start(
  opts: { auth?: ProxyCredentials; fail?: unknown; maxHeaderBytes?: number } = {},
): Harness {
  const [client, server] = duplexPair();
  const dials: Target[] = [];
  const errors: unknown[] = [];
  const origins: Origin[] = [];
  const waiting: ((o: Origin) => void)[] = [];
  const done = handleHttpProxy(server, {
    auth: opts.auth,
    maxHeaderBytes: opts.maxHeaderBytes,
    outbound: dialerOutbound((target) => {
      dials.push(target);
      if (opts.fail !== undefined) return Promise.reject(opts.fail);
      const [near, far] = duplexPair();
      const o = { conn: far, r: new BufferedReader(far) };
      origins.push(o);
      waiting.shift()?.(o);
      return Promise.resolve(near);
    }),
    onError: (e) => errors.push(e),
  });
  let taken = 0;
  return {
    client,
    r: new BufferedReader(client),
    done,
    dials,
    errors,
    origins,
    nextOrigin() {
      const i = taken++;
      if (origins[i]) return Promise.resolve(origins[i]);
      return new Promise((resolve) => waiting.push(resolve));
    },
  };
}

async function finish(h: Harness): Promise<void> {
  h.client.close();
  for (const o of h.origins) o.conn.close();
  await h.done;
  assertEquals(h.errors.map(String), [], "no unexpected errors");
}

async function send(d: Duplex, s: string): Promise<void> {
  await d.write(text(s));
}

async function response(
  h: Harness,
): Promise<{ head: ResponseHead; body: string }> {
  const head = await readResponseHead(h.r);
  if (!head) throw new Error("no response");
  const cl = head.headers.find(([n]) => n.toLowerCase() === "content-length");
  const body = cl && head.status >= 200 && head.status !== 204 && head.status !== 304
    ? decodeLatin1(await h.r.readExact(Number(cl[1])))
    : "";
  return { head, body };
}

async function request(o: Origin): Promise<RequestHead> {
  const head = await readRequestHead(o.r);
  if (!head) throw new Error("no request at origin");
  return head;
}

const header = (head: { headers: [string, string][] }, name: string) =>
  head.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

Deno.test("http: absolute-form GET is rewritten to origin-form with hop-by-hop fields removed", async () => {
  const h = start();
  await send(
    h.client,
    "GET http://user:pw@Example.com:8080/a/b?x=1 HTTP/1.1\r\n" +
      "Host: wrong.example\r\n" +
      "Connection: keep-alive, X-Hop\r\n" +
      "X-Hop: 1\r\n" +
      "Keep-Alive: timeout=5\r\n" +
      "Proxy-Connection: keep-alive\r\n" +
      "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
      "TE: trailers\r\n" +
      "Trailer: X-Sum\r\n" +
      "Upgrade: h2c\r\n" +
      "X-End: yes\r\n" +
      "Accept: */*\r\n\r\n",
  );
  const o = await h.nextOrigin();
  const req = await request(o);
  assertEquals(h.dials, [{ host: "Example.com", port: 8080 }]);
  assertEquals(req.method, "GET");
  assertEquals(req.target, "/a/b?x=1");
  assertEquals(req.minorVersion, 1);
  assertEquals(req.headers, [["Host", "Example.com:8080"], ["X-End", "yes"], ["Accept", "*/*"]]);
  await send(
    o.conn,
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: X-Resp\r\nX-Resp: a\r\n" +
      "Keep-Alive: timeout=3\r\nProxy-Authenticate: Basic\r\nServer: t\r\n\r\nhello",
  );
  const res = await response(h);
  assertEquals(res.head.status, 200);
  assertEquals(res.head.headers, [["Content-Length", "5"], ["Server", "t"]]);
  assertEquals(res.body, "hello");
  await finish(h);
});

Deno.test("http: keep-alive reuses the upstream for the same host:port and redials otherwise", async () => {
  const h = start();
  const origin = async (host: string, n: number) => {
    await send(h.client, `GET http://${host}/${n} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  };
  await origin("a.test", 1);
  const a = await h.nextOrigin();
  assertEquals((await request(a)).target, "/1");
  await send(a.conn, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1");
  assertEquals((await response(h)).body, "1");
  await origin("a.test:80", 2);
  assertEquals((await request(a)).target, "/2");
  await send(a.conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n2\r\n0\r\n\r\n");
  const head = await readResponseHead(h.r);
  assertEquals(header(head!, "transfer-encoding"), ["chunked"]);
  assertEquals(decodeLatin1(await h.r.readExact(11)), "1\r\n2\r\n0\r\n\r\n");
  assertEquals(h.dials.length, 1, "same host:port: no new dial");
  await origin("b.test", 3);
  const b = await h.nextOrigin();
  assertEquals((await request(b)).target, "/3");
  assertEquals(await readAll(a.conn), "", "old upstream closed");
  await send(b.conn, "HTTP/1.1 204 No Content\r\n\r\n");
  assertEquals((await response(h)).head.status, 204);
  assertEquals(h.dials, [{ host: "a.test", port: 80 }, { host: "b.test", port: 80 }]);
  await finish(h);
});

Deno.test("http: request bodies (Content-Length and chunked with trailers) are forwarded exactly", async () => {
  const h = start();
  await send(
    h.client,
    "POST http://o.test/upload HTTP/1.1\r\nHost: o.test\r\nContent-Length: 11\r\n\r\nhello world",
  );
  const o = await h.nextOrigin();
  const req = await request(o);
  assertEquals(header(req, "content-length"), ["11"]);
  assertEquals(decodeLatin1(await o.r.readExact(11)), "hello world");
  await send(o.conn, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
  assertEquals((await response(h)).head.status, 201);

  const chunked = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n";
  await send(
    h.client,
    "PUT http://o.test/c HTTP/1.1\r\nHost: o.test\r\nTransfer-Encoding: chunked\r\n\r\n" +
      chunked.slice(0, 9),
  );
  const req2 = await request(o);
  assertEquals(header(req2, "transfer-encoding"), ["chunked"]);
  await send(h.client, chunked.slice(9));
  assertEquals(decodeLatin1(await o.r.readExact(chunked.length)), chunked);
  await send(o.conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  assertEquals((await response(h)).body, "ok");
  assertEquals(h.dials.length, 1);
  await finish(h);
});

Deno.test("http: 100 Continue is relayed before the body is sent", async () => {
  const h = start();
  await send(
    h.client,
    "POST http://o.test/ HTTP/1.1\r\nHost: o.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
  );
  const o = await h.nextOrigin();
  await request(o);
  await send(o.conn, "HTTP/1.1 100 Continue\r\n\r\n");
  const interim = await readResponseHead(h.r);
  assertEquals(interim!.status, 100);
  await send(h.client, "data");
  assertEquals(decodeLatin1(await o.r.readExact(4)), "data");
  await send(o.conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  assertEquals((await response(h)).head.status, 200);
  await finish(h);
});

Deno.test("http: HEAD, 204 and 304 responses have no body; the connection stays usable", async () => {
  const h = start();
  await send(h.client, "HEAD http://o.test/ HTTP/1.1\r\nHost: o.test\r\n\r\n");
  const o = await h.nextOrigin();
  await request(o);
  await send(o.conn, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
  const head = await readResponseHead(h.r);
  assertEquals(header(head!, "content-length"), ["1000"]);
  for (const status of [304, 204]) {
    await send(h.client, "GET http://o.test/x HTTP/1.1\r\nHost: o.test\r\n\r\n");
    await request(o);
    await send(o.conn, `HTTP/1.1 ${status} X\r\nContent-Length: 7\r\n\r\n`);
    assertEquals((await readResponseHead(h.r))!.status, status);
  }
  await send(h.client, "GET http://o.test/y HTTP/1.1\r\nHost: o.test\r\n\r\n");
  await request(o);
  await send(o.conn, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nend");
  assertEquals((await response(h)).body, "end");
  assertEquals(h.dials.length, 1);
  await finish(h);
});

Deno.test("http: close-delimited responses end the client connection", async () => {
  const h = start();
  await send(h.client, "GET http://o.test/ HTTP/1.1\r\nHost: o.test\r\n\r\n");
  const o = await h.nextOrigin();
  await request(o);
  await send(o.conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstreamed until close");
  await o.conn.closeWrite();
  const head = await readResponseHead(h.r);
  assertEquals(header(head!, "connection"), ["close"]);
  assertEquals(await readAll(h.r), "streamed until close");
  await finish(h);
});

Deno.test("http: an HTTP/1.0 client gets a chunked response de-chunked and close-delimited", async () => {
  const h = start();
  await send(h.client, "GET http://o.test/ HTTP/1.0\r\n\r\n");
  const o = await h.nextOrigin();
  const req = await request(o);
  assertEquals(req.minorVersion, 1, "a proxy sends its own version");
  assertEquals(header(req, "host"), ["o.test"]);
  await send(
    o.conn,
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
  );
  const head = await readResponseHead(h.r);
  assertEquals(header(head!, "transfer-encoding"), []);
  assertEquals(header(head!, "connection"), ["close"]);
  assertEquals(await readAll(h.r), "abcde");
  await finish(h);
});

Deno.test("http: HTTP/1.0 keep-alive is kept for responses of known length, not otherwise", async () => {
  const h = start();
  // Content-Length: kept, and the client is told so.
  await send(h.client, "GET http://o.test/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  const o = await h.nextOrigin();
  const req = await request(o);
  assertEquals(header(req, "connection"), [], "hop-by-hop Connection is not forwarded");
  await send(o.conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok");
  const r1 = await response(h);
  assertEquals(header(r1.head, "connection"), ["keep-alive"]);
  assertEquals(r1.body, "ok");
  // Bodiless (204), legacy Proxy-Connection: kept on the same upstream.
  await send(h.client, "GET http://o.test/2 HTTP/1.0\r\nProxy-Connection: Keep-Alive\r\n\r\n");
  assertEquals((await request(o)).target, "/2");
  await send(o.conn, "HTTP/1.1 204 No Content\r\n\r\n");
  const r2 = await response(h);
  assertEquals(r2.head.status, 204);
  assertEquals(header(r2.head, "connection"), ["keep-alive"]);
  // Chunked: de-chunked for HTTP/1.0, so close-delimited and the connection ends.
  await send(h.client, "GET http://o.test/3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  assertEquals((await request(o)).target, "/3");
  await send(o.conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n");
  const head = await readResponseHead(h.r);
  assertEquals(header(head!, "connection"), ["close"]);
  assertEquals(await readAll(h.r), "ab");
  await h.done;
  assertEquals(h.dials.length, 1, "one upstream for the three requests");
  await finish(h);
});

Deno.test("http: HTTP/1.0 without keep-alive, or with close beside it, is answered with a close", async () => {
  for (const extra of ["", "Connection: keep-alive, close\r\n"]) {
    const h = start();
    await send(h.client, `GET http://o.test/ HTTP/1.0\r\n${extra}\r\n`);
    const o = await h.nextOrigin();
    await request(o);
    await send(o.conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    const res = await response(h);
    assertEquals(
      header(res.head, "connection"),
      ["close"],
      `request with ${JSON.stringify(extra)}`,
    );
    assertEquals(res.body, "ok");
    assertEquals(await readAll(h.r), "", "connection closed after the response");
    await h.done;
    await finish(h);
  }
});

Deno.test("http: an HTTP/1.1 response to an HTTP/1.1 client carries no added Connection header", async () => {
  const h = start();
  await send(
    h.client,
    "GET http://o.test/ HTTP/1.1\r\nHost: o.test\r\nConnection: keep-alive\r\n\r\n",
  );
  const o = await h.nextOrigin();
  await request(o);
  await send(o.conn, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
  const res = await response(h);
  assertEquals(header(res.head, "connection"), []);
  assertEquals(res.body, "x");
  await finish(h);
});

Deno.test("http: pipelined requests are answered in order", async () => {
  const h = start();
  await send(
    h.client,
    "GET http://o.test/1 HTTP/1.1\r\nHost: o.test\r\n\r\nGET http://o.test/2 HTTP/1.1\r\nHost: o.test\r\n\r\n",
  );
  const o = await h.nextOrigin();
  assertEquals((await request(o)).target, "/1");
  await send(o.conn, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na");
  assertEquals((await response(h)).body, "a");
  assertEquals((await request(o)).target, "/2");
  await send(o.conn, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb");
  assertEquals((await response(h)).body, "b");
  await finish(h);
});

Deno.test("http: a kept-alive upstream that closed is redialed for an idempotent request", async () => {
  const h = start();
  await send(h.client, "GET http://o.test/1 HTTP/1.1\r\nHost: o.test\r\n\r\n");
  const first = await h.nextOrigin();
  await request(first);
  await send(first.conn, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na");
  assertEquals((await response(h)).body, "a");
  first.conn.close(); // the origin drops the idle connection
  await send(h.client, "GET http://o.test/2 HTTP/1.1\r\nHost: o.test\r\n\r\n");
  const second = await h.nextOrigin();
  assertEquals((await request(second)).target, "/2");
  await send(second.conn, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb");
  assertEquals((await response(h)).body, "b");
  assertEquals(h.dials.length, 2);
  await finish(h);
});

Deno.test("http: an early answer during an upload closes the client after the answer", async () => {
  const h = start();
  await send(
    h.client,
    "POST http://o.test/ HTTP/1.1\r\nHost: o.test\r\nContent-Length: 100000\r\n\r\npartial",
  );
  const o = await h.nextOrigin();
  await request(o);
  await send(o.conn, "HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig");
  const res = await response(h);
  assertEquals(res.head.status, 413);
  assertEquals(header(res.head, "connection"), ["close"]);
  assertEquals(res.body, "big");
  assertEquals(await readAll(h.r), "", "then EOF");
  await finish(h);
});

Deno.test("http: CONNECT opens a tunnel; bytes sent after the request head are forwarded", async () => {
  const h = start();
  await send(h.client, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nEARLY");
  const o = await h.nextOrigin();
  assertEquals(h.dials, [{ host: "example.com", port: 443 }]);
  const head = await readResponseHead(h.r);
  assertEquals([head!.status, head!.reason], [200, "Connection established"]);
  assertEquals(decodeLatin1(await o.r.readExact(5)), "EARLY");
  await send(o.conn, "from origin");
  assertEquals(decodeLatin1(await h.r.readExact(11)), "from origin");
  await h.client.closeWrite();
  assertEquals(await readAll(o.r), "");
  await o.conn.closeWrite();
  assertEquals(await readAll(h.r), "");
  await h.done;
  await finish(h);

  const h6 = start();
  await send(h6.client, "CONNECT [2001:DB8::0:1]:8443 HTTP/1.1\r\n\r\n");
  await h6.nextOrigin();
  assertEquals(h6.dials, [{ host: "2001:db8::1", port: 8443 }]);
  assertEquals((await readResponseHead(h6.r))!.status, 200);
  await finish(h6);
});

async function expectStatus(req: string, status: number, opts = {}): Promise<string> {
  const h = start(opts);
  await send(h.client, req);
  const res = await readResponseHead(h.r);
  assertEquals(res?.status, status, JSON.stringify(req.slice(0, 60)));
  assertEquals(header(res!, "connection"), ["close"]);
  const rest = await readAll(h.r);
  assertEquals(h.dials.length, 0, "no dial for a bad request");
  await finish(h);
  return rest;
}

Deno.test("http: malformed requests get 400 and a close", async () => {
  const bad = [
    "GARBAGE\r\n\r\n",
    "GET  http://o.test/ HTTP/1.1\r\n\r\n",
    "GET http://o.test/ HTTP/1.1 extra\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: o.test\r\n\r\n",
    "GET http:///path HTTP/1.1\r\n\r\n",
    "GET http://o.test:99999/ HTTP/1.1\r\n\r\n",
    "GET http://o.test:0/ HTTP/1.1\r\n\r\n",
    "GET http://bad_host!/ HTTP/1.1\r\n\r\n",
    "GET http://[::1/ HTTP/1.1\r\n\r\n",
    "GET http://o.test/ HTTP/1.1\r\nBad Header: x\r\n\r\n",
    "GET http://o.test/ HTTP/1.1\r\nNoColon\r\n\r\n",
    "GET http://o.test/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
    "GET http://o.test/ HTTP/1.1\r\nX: a\rb\r\n\r\n",
    "POST http://o.test/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST http://o.test/ HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
    "POST http://o.test/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    "POST http://o.test/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    "POST http://o.test/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "CONNECT example.com HTTP/1.1\r\n\r\n",
    "CONNECT example.com:http HTTP/1.1\r\n\r\n",
    "CONNECT [fe80::1%eth0]:443 HTTP/1.1\r\n\r\n",
  ];
  for (const req of bad) await expectStatus(req, 400);
  await expectStatus("GET https://o.test/ HTTP/1.1\r\n\r\n", 501);
  await expectStatus("GET http://o.test/ HTTP/2.0\r\n\r\n", 505);
});

Deno.test("http: a header section over the limit gets 431", async () => {
  const big = "X-Big: " + "a".repeat(70 * 1024) + "\r\n";
  await expectStatus(`GET http://o.test/ HTTP/1.1\r\n${big}\r\n`, 431);
  const many = "X-A: 0123456789\r\n".repeat(100);
  await expectStatus(`GET http://o.test/ HTTP/1.1\r\n${many}\r\n`, 431, { maxHeaderBytes: 1024 });
  await expectStatus(`GET http://o.test/${"p".repeat(2000)} HTTP/1.1\r\n\r\n`, 431, {
    maxHeaderBytes: 1024,
  });
});

Deno.test("http: truncated requests and immediate EOF close quietly", async () => {
  for (const req of ["", "GET http://o.test/ HTTP/1.1\r\nHost: o.te", "GET http://o.test/"]) {
    const h = start();
    await send(h.client, req);
    await h.client.closeWrite();
    assertEquals(await readAll(h.r), "");
    assertEquals(h.dials.length, 0);
    await finish(h);
  }
});

Deno.test("http: Proxy-Authorization Basic is required when credentials are configured", async () => {
  const auth = { username: "alice", password: "s3cret:x" };
  const good = btoa("alice:s3cret:x");
  const wrong = btoa("alice:nope");
  for (const value of [undefined, `Basic ${wrong}`, "Bearer abc", "Basic !!!"]) {
    const h = start({ auth });
    const hdr = value ? `Proxy-Authorization: ${value}\r\n` : "";
    await send(h.client, `GET http://o.test/ HTTP/1.1\r\nHost: o.test\r\n${hdr}\r\n`);
    const res = await readResponseHead(h.r);
    assertEquals(res?.status, 407);
    assertEquals(header(res!, "proxy-authenticate"), ['Basic realm="ostp", charset="UTF-8"']);
    await readAll(h.r);
    assertEquals(h.dials.length, 0);
    await finish(h);
  }
  // CONNECT needs it too.
  await expectStatus("CONNECT o.test:443 HTTP/1.1\r\n\r\n", 407, { auth });
  // Right credentials: forwarded, without the Proxy-Authorization field.
  const h = start({ auth });
  await send(
    h.client,
    `GET http://o.test/ HTTP/1.1\r\nHost: o.test\r\nProxy-Authorization: basic  ${good}\r\n\r\n`,
  );
  const o = await h.nextOrigin();
  const req = await request(o);
  assertEquals(header(req, "proxy-authorization"), []);
  await send(o.conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  assertEquals((await response(h)).head.status, 200);
  await finish(h);
  assertEquals(checkProxyAuthorization([["Proxy-Authorization", `Basic ${good}`]], auth), true);
  assertEquals(
    checkProxyAuthorization([["Proxy-Authorization", `Basic ${btoa("alice")}`]], auth),
    false,
  );
});

Deno.test("http: dial failures map to 502, 504 and 403", async () => {
  const table: [DialFailure, number][] = [
    ["refused", 502],
    ["unreachable", 502],
    ["general", 502],
    ["dns", 502],
    ["unavailable", 502],
    ["timeout", 504],
    ["denied", 403],
  ];
  for (const [reason, status] of table) {
    assertEquals(httpStatusForDialError(new DialError(reason)), status);
    for (
      const req of ["GET http://o.test/ HTTP/1.1\r\n\r\n", "CONNECT o.test:443 HTTP/1.1\r\n\r\n"]
    ) {
      const h = start({ fail: new DialError(reason) });
      await send(h.client, req);
      const res = await readResponseHead(h.r);
      assertEquals(res?.status, status, `${reason} ${req.slice(0, 8)}`);
      await readAll(h.r);
      await finish(h);
    }
  }
});

Deno.test("http: upstream failures before a response give 502", async () => {
  for (
    const answer of [
      "",
      "NOT HTTP\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
      "HTTP/1.1 101 Switching\r\n\r\n",
    ]
  ) {
    const h = start();
    await send(h.client, "GET http://o.test/ HTTP/1.1\r\n\r\n");
    const o = await h.nextOrigin();
    await request(o);
    await send(o.conn, answer);
    await o.conn.closeWrite();
    const res = await readResponseHead(h.r);
    assertEquals(res?.status, 502, JSON.stringify(answer));
    await readAll(h.r);
    await finish(h);
  }
});

Deno.test("http: aborting the signal closes client and upstream", async () => {
  const [client, server] = duplexPair();
  const ctl = new AbortController();
  let origin: Duplex | undefined;
  const done = handleHttpProxy(server, {
    signal: ctl.signal,
    outbound: dialerOutbound(() => {
      const [near, far] = duplexPair();
      origin = far;
      return Promise.resolve(near);
    }),
  });
  await send(client, "GET http://o.test/ HTTP/1.1\r\n\r\n");
  const o = new BufferedReader((await waitFor(() => origin))!);
  await readRequestHead(o);
  ctl.abort(); // while waiting for the response
  await done;
  assertEquals(await readAll(client), "");
  assertEquals(await readAll(o), "");
  client.close();
  origin!.close();
});

async function waitFor<T>(f: () => T | undefined): Promise<T> {
  for (let i = 0; i < 1000; i++) {
    const v = f();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error("timed out waiting");
}

Deno.test("http: parsers", () => {
  assertEquals(parseAuthority("h.test:1"), { host: "h.test", port: 1 });
  assertEquals(parseAuthority("h.test"), null);
  assertEquals(parseAuthority("h.test", 80), { host: "h.test", port: 80 });
  assertEquals(parseAuthority("[::FFFF:1.2.3.4]:5"), { host: "::ffff:1.2.3.4", port: 5 });
  assertEquals(parseAuthority("::1:80"), null, "IPv6 needs brackets");
  assertEquals(parseAuthority("h.test:65536"), null);
  assertEquals(parseAbsoluteTarget("http://h.test?q=1"), {
    target: { host: "h.test", port: 80 },
    authority: "h.test",
    path: "/?q=1",
  });
  assertEquals(parseAbsoluteTarget("HTTP://[::1]:81/p#frag").path, "/p");
  assertEquals(
    stripHopByHop([["Connection", "close, X-A"], ["x-a", "1"], ["Content-Length", "2"], [
      "X-B",
      "2",
    ]]),
    [["Content-Length", "2"], ["X-B", "2"]],
  );
});

Deno.test("pipe: BufferedReader lines, limits, exact reads and leftovers", async () => {
  const [a, b] = duplexPair();
  const r = new BufferedReader(b, 16);
  await a.write(text("line one\r\nline two\nabcdefghij"));
  assertEquals(await r.readLine(100), "line one");
  assertEquals(await r.readLine(8), "line two");
  await assertRejects(() => r.readLine(5), LineTooLongError);
  assertEquals("abcdefghij".startsWith(decodeLatin1(r.peek())), true, "leftover kept");
  assertEquals(decodeLatin1(await r.readExact(3)), "abc");
  await a.write(text("KLMNOPQRSTUVWXYZ"));
  assertEquals(decodeLatin1(await r.readExact(20)), "defghijKLMNOPQRSTUVW");
  assertEquals(await r.readByte(), "X".charCodeAt(0));
  assertEquals(decodeLatin1(r.take()), "YZ");
  await a.write(text("\xff\x80 bytes\r\n"));
  assertEquals(await r.readLine(100), "\xff\x80 bytes", "latin-1 round trip");
  await a.write(text("tail"));
  await a.closeWrite();
  await assertRejects(() => r.readLine(100), Deno.errors.UnexpectedEof);
  assertEquals(decodeLatin1(r.take()), "tail", "the partial line stays available");
  assertEquals(await r.readLine(100), null);
  await assertRejects(() => r.readByte(), Deno.errors.UnexpectedEof);
  a.close();
  b.close();
});

Deno.test("pipe: relay copies both ways, propagates half-close and counts bytes", async () => {
  const [c1, c2] = duplexPair();
  const [s1, s2] = duplexPair();
  const live: [number, number][] = [];
  const running = relay(c2, s1, { onBytes: (up, down) => live.push([up, down]) });
  await c1.write(text("to server"));
  await c1.closeWrite();
  assertEquals(await readAll(s2), "to server", "EOF reaches the server");
  assertEquals(live, [[9, 0]], "bytes reported as they are written on");
  await s2.write(text("reply after half-close"));
  await s2.closeWrite();
  assertEquals(await readAll(c1), "reply after half-close");
  assertEquals(await running, { aToB: 9, bToA: 22 });
  assertEquals(live, [[9, 0], [0, 22]]);
  c1.close();
  s2.close();
});

Deno.test("pipe: relay closes both sides when a write fails or the signal aborts", async () => {
  let [c1, c2] = duplexPair();
  let [s1, s2] = duplexPair();
  let running = relay(c2, s1);
  await c1.write(text("x"));
  assertEquals(decodeLatin1(await new BufferedReader(s2).readExact(1)), "x");
  c1.close(); // looks like a FIN to the relay...
  assertEquals(await readAll(s2), "", "...which is passed on as a half-close");
  await s2.write(text("too late")); // ...and writing back to the closed client fails
  assertEquals(await running, { aToB: 1, bToA: 0 }, "an expected disconnect is not thrown");
  s2.close();

  [c1, c2] = duplexPair();
  [s1, s2] = duplexPair();
  const ctl = new AbortController();
  running = relay(c2, s1, { signal: ctl.signal });
  ctl.abort();
  await running;
  assertEquals(await readAll(c1), "");
  assertEquals(await readAll(s2), "");
  c1.close();
  s2.close();
});

Deno.test("http: random input never throws, hangs or reports an error", async () => {
  let x = 0x2545f491;
  const rand = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  const pieces = [
    "GET ",
    "CONNECT ",
    "POST ",
    "http://o.test",
    "o.test:443",
    "[::1]:80",
    "/p",
    " HTTP/1.1",
    " HTTP/1.0",
    "\r\n",
    "\n",
    "Host: o\r\n",
    "Content-Length: 3\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Connection: close\r\n",
    "Proxy-Authorization: Basic dTpw\r\n",
    ": ",
    " ",
    "\r\n\r\n",
    "3\r\nabc\r\n0\r\n\r\n",
    "\x00",
    "\xff",
  ];
  for (let round = 0; round < 500; round++) {
    const [client, server] = duplexPair();
    const errors: unknown[] = [];
    const done = handleHttpProxy(server, {
      auth: rand() < 0.3 ? { username: "u", password: "p" } : undefined,
      outbound: dialerOutbound(() => {
        const [near, far] = duplexPair();
        // The origin answers with something plausible, then hangs up.
        far.write(text("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).then(() => far.close());
        return Promise.resolve(near);
      }),
      onError: (e) => errors.push(e),
    });
    let input = "";
    const n = Math.floor(rand() * 16);
    for (let i = 0; i < n; i++) {
      input += rand() < 0.8
        ? pieces[Math.floor(rand() * pieces.length)]
        : String.fromCharCode(Math.floor(rand() * 256));
    }
    await client.write(text(input));
    await client.closeWrite();
    await readAll(client);
    await done;
    client.close();
    assertEquals(errors.map(String), [], `input ${JSON.stringify(input)}`);
  }
});
