/**
 * End-to-end tests of the client's outbounds against real peers on loopback:
 * the http outbound through a real squid (Debian's package; skipped with a
 * message when `/usr/sbin/squid` is absent) with and without Basic
 * authentication, and the direct outbound's TCP and UDP against local
 * listeners. Payloads are compared by SHA-256.
 */

import "../../ffi/udp_linux.ts";
import { DirectOutbound } from "../../client/outbound/direct.ts";
import { HttpConnectOutbound } from "../../client/outbound/http_connect.ts";
import type { FlowContext } from "../../client/outbound/outbound.ts";
import { Socks5Reply, socks5ReplyForError } from "../../client/inbound/socks5.ts";
import { httpStatusForDialError } from "../../client/inbound/http.ts";
import { DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import { writeAll } from "../../shared/pipe.ts";
import { freePort, payload, sha256Hex, startOrigin } from "../support/daemons.ts";
import { haveSquid, ncsaAuth, SQUID, type Squid, startSquid } from "../support/squid.ts";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";

if (!haveSquid) {
  console.warn(`SKIP http outbound squid tests: ${SQUID} not installed (apt-get install squid)`);
} else if (!ncsaAuth) {
  console.warn("SKIP http outbound auth test: basic_ncsa_auth not found");
}

function tcpCtx(host: string, port: number): FlowContext {
  return { inbound: "test", network: "tcp", target: { host, port } };
}

/** GET /bytes/N over `conn` (HTTP/1.1, Connection: close); resolves to the body. */
async function fetchBytes(conn: Duplex, host: string, port: number, n: number, seed: number) {
  await writeAll(
    conn,
    new TextEncoder().encode(
      `GET /bytes/${n}?seed=${seed} HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: close\r\n\r\n`,
    ),
  );
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    const k = await conn.read(buf);
    if (k === null) break;
    chunks.push(buf.slice(0, k));
    total += k;
  }
  conn.close();
  const all = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  const sep = all.findIndex((_, i) =>
    all[i] === 13 && all[i + 1] === 10 && all[i + 2] === 13 && all[i + 3] === 10
  );
  assert(sep > 0, "no response head");
  const head = new TextDecoder().decode(all.subarray(0, sep));
  assert(head.startsWith("HTTP/1.1 200"), head);
  const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
  assert(cl && Number(cl[1]) === n, head);
  return all.subarray(sep + 4);
}

async function expectPayload(conn: Duplex, originPort: number, n: number, seed: number) {
  const body = await fetchBytes(conn, "127.0.0.1", originPort, n, seed);
  assertEquals(body.length, n);
  assertEquals(await sha256Hex(body), await sha256Hex(payload(n, seed)));
}

Deno.test({
  name: "http outbound through squid: CONNECT, Basic auth, refusals mapped",
  ignore: !haveSquid,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const origin = startOrigin();
    const closedPort = freePort(); // allowed by squid, nothing listens
    const user = "ostp";
    const password = "p@ss:wörd 1";
    const encoded = encodeURIComponent(password);
    let squid: (Squid & { ca: string | null }) | null = null;
    let passed = false;
    try {
      squid = await startSquid({ allowedPorts: [origin.port, closedPort], user, password });
      const { openPort, authPort, tlsPort, ca } = squid;

      await t.step("no auth: 1 MiB payload arrives intact", async () => {
        const o = new HttpConnectOutbound({ proxy: `http://127.0.0.1:${openPort}` });
        await expectPayload(
          await o.dial(tcpCtx("127.0.0.1", origin.port)),
          origin.port,
          1 << 20,
          7,
        );
        // Several flows at once, each its own CONNECT.
        await Promise.all(
          [1, 2, 3, 4].map(async (seed) =>
            expectPayload(
              await o.dial(tcpCtx("127.0.0.1", origin.port)),
              origin.port,
              200_000,
              seed,
            )
          ),
        );
      });

      await t.step("CONNECT to a port squid does not allow → 403 → denied", async () => {
        const o = new HttpConnectOutbound({ proxy: `http://127.0.0.1:${openPort}` });
        const e = await assertRejects(() => o.dial(tcpCtx("127.0.0.1", 9)), DialError) as DialError;
        assertEquals(e.reason, "denied", e.message);
        assertEquals(socks5ReplyForError(e), Socks5Reply.NotAllowed);
        assertEquals(httpStatusForDialError(e), 403);
      });

      await t.step("CONNECT to a closed port → refused", async () => {
        const o = new HttpConnectOutbound({ proxy: `http://127.0.0.1:${openPort}` });
        const e = await assertRejects(
          () => o.dial(tcpCtx("127.0.0.1", closedPort)),
          DialError,
        ) as DialError;
        assertEquals(e.reason, "refused", e.message);
        assertEquals(socks5ReplyForError(e), Socks5Reply.ConnectionRefused);
      });

      if (ca) {
        await t.step("https:// proxy (TLS to squid): payload arrives intact", async () => {
          const o = new HttpConnectOutbound({
            proxy: `https://127.0.0.1:${tlsPort}`,
            caCerts: [ca],
          });
          await expectPayload(
            await o.dial(tcpCtx("127.0.0.1", origin.port)),
            origin.port,
            1 << 20,
            5,
          );
        });
        await t.step("https:// proxy with an unknown CA → unavailable", async () => {
          const o = new HttpConnectOutbound({ proxy: `https://127.0.0.1:${tlsPort}` });
          const e = await assertRejects(
            () => o.dial(tcpCtx("127.0.0.1", origin.port)),
            DialError,
          ) as DialError;
          assertEquals(e.reason, "unavailable", e.message);
          assert(/certificate/i.test(e.message), e.message);
        });
      } else console.warn("SKIP https:// proxy step: openssl missing or certificates not made");

      if (!ncsaAuth) return;

      await t.step("Basic auth: right credentials carry the payload", async () => {
        const o = new HttpConnectOutbound({
          proxy: `http://${user}:${encoded}@127.0.0.1:${authPort}`,
        });
        await expectPayload(
          await o.dial(tcpCtx("127.0.0.1", origin.port)),
          origin.port,
          1 << 20,
          9,
        );
      });

      await t.step(
        "Basic auth: wrong password → 407 → denied, no secret in the message",
        async () => {
          const o = new HttpConnectOutbound({
            proxy: `http://${user}:not-the-password@127.0.0.1:${authPort}`,
          });
          const e = await assertRejects(
            () => o.dial(tcpCtx("127.0.0.1", origin.port)),
            DialError,
          ) as DialError;
          assertEquals(e.reason, "denied");
          assertEquals(e.message, "proxy authentication failed");
          assertEquals(socks5ReplyForError(e), 0x02);
          assertEquals(httpStatusForDialError(e), 403);
        },
      );

      await t.step("Basic auth: no credentials → 407 → denied", async () => {
        const o = new HttpConnectOutbound({ proxy: `http://127.0.0.1:${authPort}` });
        const e = await assertRejects(
          () => o.dial(tcpCtx("127.0.0.1", origin.port)),
          DialError,
        ) as DialError;
        assertEquals(e.reason, "denied");
        assert(e.message.includes("proxy authentication required"), e.message);
      });
      passed = true;
    } finally {
      const log = await squid?.stop();
      await origin.close();
      if (Deno.env.get("OSTP_TEST_VERBOSE")) console.error(log);
      if (passed && log !== undefined) {
        // The flows really went through squid: its access log has them.
        const tunnels = log.split("\n").filter((l) =>
          l.includes(`CONNECT 127.0.0.1:${origin.port}`) && /\/200 /.test(l)
        );
        assertEquals(tunnels.length, 5 + (ncsaAuth ? 1 : 0) + (squid?.ca ? 1 : 0), log);
        if (ncsaAuth) {
          const authed = new RegExp(`/200 \\d+ CONNECT 127\\.0\\.0\\.1:${origin.port} ${user} `);
          assert(log.split("\n").some((l) => authed.test(l)), log);
          assert(/TCP_DENIED\/407 /.test(log), log);
        }
        assert(/TCP_DENIED\/403 .*CONNECT 127\.0\.0\.1:9 /.test(log), log);
      }
    }
  },
});

Deno.test("http outbound: no proxy listening → unavailable", async () => {
  const port = freePort();
  const o = new HttpConnectOutbound({ proxy: `http://u:secret-pw@127.0.0.1:${port}` });
  const e = await assertRejects(() => o.dial(tcpCtx("127.0.0.1", 80)), DialError) as DialError;
  assertEquals(e.reason, "unavailable");
  assert(e.message.includes(`127.0.0.1:${port}`) && !e.message.includes("secret-pw"), e.message);
});

Deno.test("direct outbound: TCP payload, refused port", async () => {
  const origin = startOrigin();
  try {
    const d = new DirectOutbound();
    await expectPayload(await d.dial(tcpCtx("127.0.0.1", origin.port)), origin.port, 1 << 20, 3);
    const e = await assertRejects(
      () => d.dial(tcpCtx("127.0.0.1", freePort())),
      DialError,
    ) as DialError;
    assertEquals(e.reason, "refused");
  } finally {
    await origin.close();
  }
});

/** A UDP echo on 127.0.0.1 that answers each datagram from its port and again from a second socket. */
function startUdpEcho() {
  const main = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const other = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const loop = (async () => {
    try {
      for (;;) {
        const [data, from] = await main.receive();
        await main.send(data, from);
        await other.send(new Uint8Array([...new TextEncoder().encode("other:"), ...data]), from);
      }
    } catch { /* closed */ }
  })();
  return {
    port: (main.addr as Deno.NetAddr).port,
    otherPort: (other.addr as Deno.NetAddr).port,
    async close() {
      main.close();
      other.close();
      await loop;
    },
  };
}

for (const impl of ["deno", "ffi"] as const) {
  Deno.test(`direct outbound: UDP flow (${impl} sockets), replies from any address`, async () => {
    const echo = startUdpEcho();
    const dns: string[] = [];
    const d = new DirectOutbound({
      udpImpl: impl,
      udpBind4: "127.0.0.1",
      resolve: (name) => {
        dns.push(name);
        return name === "echo.test"
          ? Promise.resolve("127.0.0.1")
          : Promise.reject(new Error("nx"));
      },
    });
    const replies: { from: Target; text: string }[] = [];
    let wake: (() => void) | null = null;
    const flow = await d.openUdp(
      { inbound: "socks", network: "udp", target: { host: "0.0.0.0", port: 0 } },
      (from, data) => {
        replies.push({ from: { ...from }, text: new TextDecoder().decode(data) });
        wake?.();
      },
    );
    const waitReplies = async (n: number) => {
      const until = performance.now() + 10_000;
      while (replies.length < n && performance.now() < until) {
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 100);
        });
      }
      assertEquals(replies.length, n, JSON.stringify(replies));
    };
    try {
      const enc = new TextEncoder();
      assert(flow.send({ host: "127.0.0.1", port: echo.port }, enc.encode("one")));
      await waitReplies(2);
      // By name (resolved once, through the injected resolver: no DNS traffic).
      assert(flow.send({ host: "echo.test", port: echo.port }, enc.encode("two")));
      assert(flow.send({ host: "ECHO.test", port: echo.port }, enc.encode("three")));
      await waitReplies(6);
      assertEquals(dns, ["echo.test"]);
      const seen = replies.map((r) => `${r.from.host}:${r.from.port} ${r.text}`).sort();
      assertEquals(
        seen,
        [
          `127.0.0.1:${echo.otherPort} other:one`,
          `127.0.0.1:${echo.otherPort} other:three`,
          `127.0.0.1:${echo.otherPort} other:two`,
          `127.0.0.1:${echo.port} one`,
          `127.0.0.1:${echo.port} three`,
          `127.0.0.1:${echo.port} two`,
        ].sort(),
      );
      // A name that does not resolve is dropped and counted; bad targets are refused.
      assert(flow.send({ host: "nx.test", port: echo.port }, enc.encode("lost")));
      await new Promise((r) => setTimeout(r, 50));
      assertEquals(d.udpStats.dnsFailures, 1);
      assertEquals(flow.send({ host: "nx.test", port: echo.port }, enc.encode("lost")), false);
      assertEquals(flow.send({ host: "127.0.0.1", port: 0 }, enc.encode("x")), false);
      assertEquals(flow.send({ host: "1:2:3", port: 53 }, enc.encode("x")), false);
      assertEquals(d.udpStats.datagramsUp, 3);
      assertEquals(d.udpStats.datagramsDown, 6);
      assertEquals(d.openFlows, 1);
    } finally {
      flow.close();
      await echo.close();
    }
    assertEquals(d.openFlows, 0);
    assertEquals(flow.send({ host: "127.0.0.1", port: echo.port }, new Uint8Array(1)), false);
  });
}

Deno.test("direct outbound: close() ends every UDP flow", async () => {
  const d = new DirectOutbound({ udpImpl: "deno" });
  const ctx: FlowContext = { inbound: "t", network: "udp", target: { host: "0.0.0.0", port: 0 } };
  const a = await d.openUdp(ctx, () => {});
  const b = await d.openUdp(ctx, () => {});
  const echo = startUdpEcho();
  try {
    assert(a.send({ host: "127.0.0.1", port: echo.port }, new Uint8Array([1])));
    assertEquals(d.openFlows, 2);
    d.close();
    assertEquals(d.openFlows, 0);
    assertEquals(b.send({ host: "127.0.0.1", port: echo.port }, new Uint8Array([1])), false);
  } finally {
    await echo.close();
  }
});
