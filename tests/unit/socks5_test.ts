import {
  encodeSocks5Reply,
  handleSocks5,
  type ProxyCredentials,
  Socks5Reply,
  socks5ReplyForError,
} from "../../client/inbound/socks5.ts";
import { DialError, type DialFailure, type Duplex, type Target } from "../../shared/duplex.ts";
import { duplexPair } from "../../shared/pipe.ts";
import { dialerOutbound } from "../../client/outbound/outbound.ts";
import { formatIPv6, parseIPv6 } from "../../shared/net/ip.ts";

function assertEquals(actual: unknown, expected: unknown, msg?: string): void {
  const a = JSON.stringify(actual, (_k, v) => v instanceof Uint8Array ? [...v] : v);
  const e = JSON.stringify(expected, (_k, v) => v instanceof Uint8Array ? [...v] : v);
  if (a !== e) throw new Error(`${msg ?? "assertEquals"}: expected ${e}, got ${a}`);
}

function bytes(...parts: (number | string | number[] | Uint8Array)[]): Uint8Array {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === "number") out.push(p);
    else if (typeof p === "string") out.push(...new TextEncoder().encode(p));
    else out.push(...p);
  }
  return Uint8Array.from(out);
}

/** Reads until EOF (or error) and returns everything received. */
async function readAll(d: Duplex): Promise<Uint8Array> {
  const chunks: number[] = [];
  const buf = new Uint8Array(4096);
  try {
    while (true) {
      const n = await d.read(buf);
      if (n === null) break;
      chunks.push(...buf.subarray(0, n));
    }
  } catch {
    // closed
  }
  return Uint8Array.from(chunks);
}

/** Reads exactly `n` bytes (fewer only at EOF). */
async function readN(d: Duplex, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await d.read(out.subarray(got));
    if (r === null) break;
    got += r;
  }
  return out.subarray(0, got);
}

const OK_REPLY = bytes(5, 0, 0, 1, 0, 0, 0, 0, 0, 0);
const reply = (code: number) => bytes(5, code, 0, 1, 0, 0, 0, 0, 0, 0);

interface Harness {
  client: Duplex;
  done: Promise<void>;
  dials: Target[];
  errors: unknown[];
  origins: Duplex[];
}

function start(
  opts: { auth?: ProxyCredentials; fail?: unknown } = {},
): Harness {
  const [client, server] = duplexPair();
  const dials: Target[] = [];
  const errors: unknown[] = [];
  const origins: Duplex[] = [];
  const done = handleSocks5(server, {
    auth: opts.auth,
    outbound: dialerOutbound((target) => {
      dials.push(target);
      if (opts.fail !== undefined) return Promise.reject(opts.fail);
      const [near, far] = duplexPair();
      origins.push(far);
      return Promise.resolve(near);
    }),
    onError: (e) => errors.push(e),
  });
  return { client, done, dials, errors, origins };
}

async function finish(h: Harness): Promise<void> {
  h.client.close();
  for (const o of h.origins) o.close();
  await h.done;
  assertEquals(h.errors.map(String), [], "no unexpected errors");
}

Deno.test("socks5: no-auth CONNECT to IPv4, relay and half-close", async () => {
  const h = start();
  await h.client.write(bytes(5, 1, 0));
  assertEquals(await readN(h.client, 2), bytes(5, 0));
  await h.client.write(bytes(5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90));
  assertEquals(await readN(h.client, 10), OK_REPLY);
  assertEquals(h.dials, [{ host: "127.0.0.1", port: 8080 }]);
  const origin = h.origins[0];
  await h.client.write(bytes("ping"));
  assertEquals(await readN(origin, 4), bytes("ping"));
  await origin.write(bytes("pong"));
  assertEquals(await readN(h.client, 4), bytes("pong"));
  // Client half-closes: origin sees EOF but can still answer.
  await h.client.closeWrite();
  assertEquals(await readAll(origin).then((b) => b.length), 0);
  await origin.write(bytes("late"));
  await origin.closeWrite();
  assertEquals(await readAll(h.client), bytes("late"));
  await finish(h);
});

Deno.test("socks5: greeting and request in one write, domain target, extra bytes forwarded", async () => {
  const h = start();
  await h.client.write(bytes(5, 2, 0x80, 0, 5, 1, 0, 3, 11, "example.com", 1, 187, "early"));
  assertEquals(await readN(h.client, 12), bytes(5, 0, ...OK_REPLY));
  assertEquals(h.dials, [{ host: "example.com", port: 443 }]);
  assertEquals(await readN(h.origins[0], 5), bytes("early"));
  await finish(h);
});

Deno.test("socks5: IPv6 addresses are formatted canonically without brackets", async () => {
  const cases: [number[], string][] = [
    [[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], "2001:db8::1"],
    [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], "::1"],
    [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1], "::ffff:192.0.2.1"],
  ];
  for (const [addr, text] of cases) {
    const h = start();
    await h.client.write(bytes(5, 1, 0, 5, 1, 0, 4, addr, 0, 80));
    assertEquals(await readN(h.client, 12), bytes(5, 0, ...OK_REPLY));
    assertEquals(h.dials, [{ host: text, port: 80 }]);
    await finish(h);
  }
  // A bracketed IPv6 literal sent as a domain name is unwrapped and canonicalized.
  const h = start();
  await h.client.write(bytes(5, 1, 0, 5, 1, 0, 3, 17, "[2001:DB8:0:0::1]", 0, 80));
  assertEquals(await readN(h.client, 12), bytes(5, 0, ...OK_REPLY));
  assertEquals(h.dials, [{ host: "2001:db8::1", port: 80 }]);
  await finish(h);
});

Deno.test("socks5: formatIPv6 follows RFC 5952", () => {
  const table: [string, string][] = [
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // first of equal runs
    ["2001:0db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // a single 0 is not compressed
    ["2001:db8:0:0:0:0:2:1", "2001:db8::2:1"],
    ["2001:db8::0:1:0:0:0", "2001:db8:0:0:1::"], // the longest run wins
    ["0:0:0:0:0:0:0:0", "::"],
    ["FE80::ABCD", "fe80::abcd"],
    ["::ffff:10.0.0.1", "::ffff:10.0.0.1"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
    ["::1.2.3.4", "::102:304"],
  ];
  for (const [input, canonical] of table) {
    const b = parseIPv6(input);
    if (!b) throw new Error(`parseIPv6 rejected ${input}`);
    assertEquals(formatIPv6(b), canonical, input);
  }
  for (
    const bad of ["", ":", "1:::2", "1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "::g", "1.2.3.4"]
  ) {
    assertEquals(parseIPv6(bad), null, bad);
  }
  assertEquals(parseIPv6("1::2:3:4:5:6:7:8"), null, ":: must stand for at least one group");
});

Deno.test("socks5: malformed greetings close without an exception", async () => {
  // Wrong version: closed silently.
  let h = start();
  await h.client.write(bytes(4, 1, 0));
  assertEquals(await readAll(h.client), bytes());
  await finish(h);
  // NMETHODS = 0: no acceptable method.
  h = start();
  await h.client.write(bytes(5, 0));
  assertEquals(await readAll(h.client), bytes(5, 0xff));
  await finish(h);
  // Truncated method list, then EOF.
  h = start();
  await h.client.write(bytes(5, 3, 0));
  await h.client.closeWrite();
  assertEquals(await readAll(h.client), bytes());
  await finish(h);
  // Client offers only user/password but none is configured.
  h = start();
  await h.client.write(bytes(5, 1, 2));
  assertEquals(await readAll(h.client), bytes(5, 0xff));
  assertEquals(h.dials.length, 0);
  await finish(h);
});

Deno.test("socks5: truncated requests close without a dial or an error", async () => {
  const prefixes = [
    bytes(5, 1),
    bytes(5, 1, 0),
    bytes(5, 1, 0, 1),
    bytes(5, 1, 0, 1, 127, 0),
    bytes(5, 1, 0, 3, 10, "exam"),
    bytes(5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0),
    bytes(5, 1, 0, 1, 127, 0, 0, 1, 0),
  ];
  for (const req of prefixes) {
    const h = start();
    await h.client.write(bytes(5, 1, 0, req));
    await h.client.closeWrite();
    assertEquals(await readAll(h.client), bytes(5, 0), `prefix ${[...req]}`);
    assertEquals(h.dials.length, 0);
    await finish(h);
  }
});

Deno.test("socks5: request errors get their reply code then a close", async () => {
  const cases: [Uint8Array, number, string][] = [
    [bytes(5, 2, 0, 1, 1, 2, 3, 4, 0, 80), Socks5Reply.CommandNotSupported, "BIND"],
    [bytes(5, 3, 0, 1, 0, 0, 0, 0, 0, 0), Socks5Reply.CommandNotSupported, "UDP ASSOCIATE"],
    [bytes(5, 9, 0, 1, 1, 2, 3, 4, 0, 80), Socks5Reply.CommandNotSupported, "unknown command"],
    [bytes(5, 1, 0, 5, 1, 2, 3, 4, 0, 80), Socks5Reply.AddressTypeNotSupported, "bad ATYP"],
    [bytes(5, 1, 0, 0, 1, 2, 3, 4, 0, 80), Socks5Reply.AddressTypeNotSupported, "ATYP 0"],
    [bytes(4, 1, 0, 1, 1, 2, 3, 4, 0, 80), Socks5Reply.GeneralFailure, "bad request version"],
    [bytes(5, 1, 0, 3, 0, 0, 80), Socks5Reply.GeneralFailure, "empty domain"],
    [bytes(5, 1, 0, 3, 3, "a b", 0, 80), Socks5Reply.GeneralFailure, "space in domain"],
    [bytes(5, 1, 0, 3, 2, [0xc3, 0x28], 0, 80), Socks5Reply.GeneralFailure, "invalid UTF-8"],
    [bytes(5, 1, 0, 1, 1, 2, 3, 4, 0, 0), Socks5Reply.GeneralFailure, "port 0"],
  ];
  for (const [req, code, label] of cases) {
    const h = start();
    await h.client.write(bytes(5, 1, 0, req));
    assertEquals(await readAll(h.client), bytes(5, 0, reply(code)), label);
    assertEquals(h.dials.length, 0, label);
    await finish(h);
  }
});

Deno.test("socks5: user/password authentication", async () => {
  const auth = { username: "user", password: "pässword" };
  const pass = new TextEncoder().encode(auth.password);
  // Success.
  let h = start({ auth });
  await h.client.write(bytes(5, 2, 0, 2));
  assertEquals(await readN(h.client, 2), bytes(5, 2));
  await h.client.write(bytes(1, 4, "user", pass.length, [...pass]));
  assertEquals(await readN(h.client, 2), bytes(1, 0));
  await h.client.write(bytes(5, 1, 0, 3, 9, "localhost", 0, 22));
  assertEquals(await readN(h.client, 10), OK_REPLY);
  assertEquals(h.dials, [{ host: "localhost", port: 22 }]);
  await finish(h);
  // Wrong password.
  h = start({ auth });
  await h.client.write(bytes(5, 1, 2, 1, 4, "user", 4, "pass", 5, 1, 0, 1, 1, 2, 3, 4, 0, 80));
  assertEquals(await readAll(h.client), bytes(5, 2, 1, 1));
  assertEquals(h.dials.length, 0);
  await finish(h);
  // Wrong username, empty password.
  h = start({ auth });
  await h.client.write(bytes(5, 1, 2, 1, 5, "users", 0));
  assertEquals(await readAll(h.client), bytes(5, 2, 1, 1));
  await finish(h);
  // No-auth offered while credentials are configured: refused with 0xFF.
  h = start({ auth });
  await h.client.write(bytes(5, 1, 0));
  assertEquals(await readAll(h.client), bytes(5, 0xff));
  await finish(h);
  // Bad subnegotiation version.
  h = start({ auth });
  await h.client.write(bytes(5, 1, 2, 5, 4, "user", 4, "pass"));
  assertEquals(await readAll(h.client), bytes(5, 2, 1, 1));
  await finish(h);
  // Truncated credentials.
  h = start({ auth });
  await h.client.write(bytes(5, 1, 2, 1, 4, "us"));
  await h.client.closeWrite();
  assertEquals(await readAll(h.client), bytes(5, 2));
  await finish(h);
});

Deno.test("socks5: dial failures map to reply codes", async () => {
  const table: [DialFailure, number][] = [
    ["refused", 0x05],
    ["unreachable", 0x03],
    ["dns", 0x04],
    ["timeout", 0x04],
    ["denied", 0x02],
    ["unavailable", 0x01],
    ["general", 0x01],
  ];
  for (const [reason, code] of table) {
    assertEquals(socks5ReplyForError(new DialError(reason)), code, reason);
    const h = start({ fail: new DialError(reason) });
    await h.client.write(bytes(5, 1, 0, 5, 1, 0, 3, 4, "host", 0, 80));
    assertEquals(await readAll(h.client), bytes(5, 0, reply(code)), reason);
    await finish(h);
  }
  // A dialer that breaks its contract: general failure, and the error is reported.
  const h = start({ fail: new TypeError("bug") });
  await h.client.write(bytes(5, 1, 0, 5, 1, 0, 1, 1, 2, 3, 4, 0, 80));
  assertEquals(await readAll(h.client), bytes(5, 0, reply(1)));
  h.client.close();
  await h.done;
  assertEquals(h.errors.length, 1);
  assertEquals(socks5ReplyForError(new Error("x")), 0x01);
});

Deno.test("socks5: encodeSocks5Reply encodes bound addresses", () => {
  assertEquals(encodeSocks5Reply(0), OK_REPLY);
  assertEquals(
    encodeSocks5Reply(0, { host: "10.1.2.3", port: 1080 }),
    bytes(5, 0, 0, 1, 10, 1, 2, 3, 4, 56),
  );
  assertEquals(
    encodeSocks5Reply(0, { host: "::1", port: 1 }),
    bytes(5, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1),
  );
  assertEquals(encodeSocks5Reply(4, { host: "a.b", port: 2 }), bytes(5, 4, 0, 3, 3, "a.b", 0, 2));
});

Deno.test("socks5: aborting the signal ends a relaying connection", async () => {
  const [client, server] = duplexPair();
  const ctl = new AbortController();
  let origin: Duplex | undefined;
  const done = handleSocks5(server, {
    signal: ctl.signal,
    outbound: dialerOutbound(() => {
      const [near, far] = duplexPair();
      origin = far;
      return Promise.resolve(near);
    }),
  });
  await client.write(bytes(5, 1, 0, 5, 1, 0, 1, 1, 2, 3, 4, 0, 80));
  assertEquals(await readN(client, 12), bytes(5, 0, ...OK_REPLY));
  ctl.abort();
  await done;
  assertEquals(await readAll(client), bytes());
  assertEquals(await readAll(origin!), bytes());
  client.close();
  origin!.close();
});

Deno.test("socks5: random input never throws, hangs or reports an error", async () => {
  let x = 0x9e3779b9;
  const rand = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  const pieces = [[5], [1], [2], [0], [3], [4], [255], [5, 1, 0], [1, 4], [0, 80]];
  for (let round = 0; round < 500; round++) {
    const [client, server] = duplexPair();
    const errors: unknown[] = [];
    const done = handleSocks5(server, {
      auth: rand() < 0.5 ? { username: "u", password: "p" } : undefined,
      outbound: dialerOutbound(() => {
        const [near, far] = duplexPair();
        far.close(); // the origin hangs up at once
        return Promise.resolve(near);
      }),
      onError: (e) => errors.push(e),
    });
    const input: number[] = [5];
    const n = Math.floor(rand() * 24);
    for (let i = 0; i < n; i++) {
      if (rand() < 0.5) input.push(...pieces[Math.floor(rand() * pieces.length)]);
      else input.push(Math.floor(rand() * 256));
    }
    await client.write(Uint8Array.from(input));
    await client.closeWrite();
    await readAll(client);
    await done;
    client.close();
    assertEquals(errors.map(String), [], `input ${input}`);
  }
});
