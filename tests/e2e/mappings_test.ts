/**
 * Port mappings end to end on loopback (docs/mappings.md), real daemons:
 * - OUT TCP: curl through an OUT mapping (byte-exact by hash) and an iperf3
 *   run; ANY with and without the server's --tcp-upstream;
 * - OUT UDP: DNS to dnsmasq, and an `iperf3 -u` run;
 * - IN TCP: a service on the client reached through the server's listener;
 *   IN UDP: an echo on the client through the server's UDP listener;
 * - an IN mapping to a port the key may not open is refused with the reason;
 * - the server restarted: the mappings come back by themselves;
 * - heartbeats off and on; a transfer intact across ten hops (--hop-interval 5);
 * - OUT mappings go through the router: a rule sends one direct.
 * @module
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  curl,
  type Daemon,
  EGRESS_DEFAULT,
  freePort,
  payload,
  sha256Hex,
  spawnDeno,
  startOrigin,
  startServer,
} from "../support/daemons.ts";
import { startDnsmasq } from "../support/dnsmasq.ts";
import { buildQuery, isDnsError, parseResponse } from "../../shared/dns/message.ts";

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function has(cmd: string): Promise<boolean> {
  try {
    await new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" }).output();
    return true;
  } catch {
    return false;
  }
}
const haveIperf = await has("iperf3");
const haveDnsmasq = await has("dnsmasq");
if (!haveIperf) console.log("SKIPPED iperf3 parts of the mapping tests: no iperf3");

/** A client with only mappings (no proxy) on `link`; resolves once connected. */
async function mappingClient(link: string, args: string[]): Promise<Daemon> {
  const d = spawnDeno("client", "client/main.ts", [link, "--no-proxy", ...args]);
  await d.waitFor(/connected to/);
  return d;
}

/** One UDP request/answer through `port`, or null after `ms`. */
async function udpAsk(port: number, data: Uint8Array, ms = 3000): Promise<Uint8Array | null> {
  const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    for (let i = 0; i < 3; i++) {
      await s.send(data, { transport: "udp", hostname: "127.0.0.1", port });
      const got = await Promise.race([
        s.receive().then(([d]) => d),
        sleep(ms / 3).then(() => null),
      ]);
      if (got) return got;
    }
    return null;
  } finally {
    s.close();
  }
}

/** A UDP echo on 127.0.0.1 that answers "echo:" + the datagram. */
function udpEcho(): { port: number; close: () => void } {
  const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const [d, from] of s) {
      await s.send(new Uint8Array([...new TextEncoder().encode("echo:"), ...d]), from);
    }
  })().catch(() => {});
  return { port: (s.addr as Deno.NetAddr).port, close: () => s.close() };
}

async function waitPort(port: number, ms = 10_000): Promise<void> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

/** An iperf3 server on 127.0.0.1:`port`. */
function iperfServer(port: number): Deno.ChildProcess {
  return new Deno.Command("iperf3", {
    args: ["-s", "-B", "127.0.0.1", "-p", String(port)],
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function iperf(args: string[]): Promise<Record<string, any>> {
  const r = await new Deno.Command("iperf3", { args: [...args, "-J"], stdout: "piped" }).output();
  const out = JSON.parse(new TextDecoder().decode(r.stdout));
  assert(!out.error, `iperf3: ${out.error}`);
  return out;
}

Deno.test({
  name: "e2e mappings: OUT TCP (curl by hash, iperf3), ANY with the server's --tcp-upstream",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const iperfPort = freePort();
    const iperfd = haveIperf ? iperfServer(iperfPort) : null;
    const server = await startServer(["--tcp-upstream", `127.0.0.1:${origin.port}`]);
    const out1 = freePort();
    const outAny = freePort();
    const outIperf = freePort();
    const client = await mappingClient(server.link, [
      "--tcp-mappings",
      `OUT^${out1}^127.0.0.1:${origin.port},OUT^${outAny}^ANY,OUT^${outIperf}^127.0.0.1:${iperfPort}`,
    ]);
    try {
      const size = 24 * MiB;
      const tmp = await Deno.makeTempFile();
      for (const port of [out1, outAny]) {
        const r = await curl(["-o", tmp, `http://127.0.0.1:${port}/bytes/${size}?seed=${port}`]);
        assertEquals(r.code, 0, r.stderr);
        assertEquals(
          await sha256Hex(await Deno.readFile(tmp)),
          await sha256Hex(payload(size, port)),
        );
      }
      await Deno.remove(tmp);
      if (iperfd) {
        await waitPort(iperfPort);
        const r = await iperf(["-c", "127.0.0.1", "-p", String(outIperf), "-t", "2"]);
        const bps = r.end.sum_received.bits_per_second;
        assert(bps > 10e6, `iperf3 through the mapping: ${(bps / 1e6).toFixed(0)} Mbit/s`);
      }
      const st = await client.statsDump();
      const m = st.stats.mappings as { spec: string; bytesDown: number; state: string }[];
      assertEquals(m.length, 3);
      assert(m.every((x) => x.state === "up"), JSON.stringify(m));
      assert(m[0].bytesDown >= size, "bytes counted per mapping");
    } finally {
      await client.stop();
      await server.daemon.stop();
      iperfd?.kill();
      await iperfd?.status;
      await origin.close();
    }
  },
});

Deno.test({
  name: "e2e mappings: ANY without a server default, and an IN port the key may not open, refused",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const server = await startServer(["--allow-in-ports", "20000-20010"]);
    const any = freePort();
    const client = await mappingClient(server.link, [
      "--tcp-mappings",
      `OUT^${any}^ANY,IN^9^127.0.0.1:20011`,
    ]);
    try {
      await client.waitFor(
        /OUT\^\d+\^ANY: down \(refused: the server has no default TCP upstream \(--tcp-upstream\)\)/,
      );
      await client.waitFor(
        /IN\^9\^127\.0\.0\.1:20011: down \(refused by the server: port 20011 is not in this key's allowInPorts\)/,
      );
      let refused = false;
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port: any })).close();
      } catch {
        refused = true;
      }
      assert(refused, "the refused ANY mapping does not listen");
    } finally {
      await client.stop();
      await server.daemon.stop();
    }
  },
});

Deno.test({
  name: "e2e mappings: OUT UDP carries DNS to dnsmasq and iperf3 -u; ANY to --udp-upstream",
  ignore: !haveDnsmasq,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dns = startDnsmasq({ records: ["--host-record=mapped.test,192.0.2.77"] });
    const echo = udpEcho();
    const iperfPort = freePort();
    const iperfd = haveIperf ? iperfServer(iperfPort) : null;
    const server = await startServer(["--udp-upstream", `127.0.0.1:${echo.port}`]);
    const dnsPort = freePort("udp");
    const anyPort = freePort("udp");
    // iperf3 -u talks TCP (control) and UDP (test datagrams) to one port: a mapping of each.
    const iperfLocal = freePort();
    const client = await mappingClient(server.link, [
      "--udp-mappings",
      `OUT^${dnsPort}^127.0.0.1:${dns.port},OUT^${anyPort}^ANY,OUT^${iperfLocal}^127.0.0.1:${iperfPort}`,
      "--tcp-mappings",
      `OUT^${iperfLocal}^127.0.0.1:${iperfPort}`,
    ]);
    try {
      await sleep(500); // dnsmasq up
      const answer = await udpAsk(dnsPort, buildQuery(0x4242, "mapped.test", 1));
      assert(answer, "a DNS answer through the mapping");
      const r = parseResponse(answer);
      assert(!isDnsError(r), `a DNS response: ${r}`);
      assertEquals(r.id, 0x4242);
      assertEquals(Array.from(r.answers[0].address ?? []), [192, 0, 2, 77]);
      const e = await udpAsk(anyPort, new TextEncoder().encode("any"));
      assertEquals(new TextDecoder().decode(e!), "echo:any", "ANY reached --udp-upstream");
      if (iperfd) {
        await waitPort(iperfPort);
        const out = await iperf([
          "-c",
          "127.0.0.1",
          "-p",
          String(iperfLocal),
          "-u",
          "-b",
          "20M",
          "-l",
          "1000",
          "-t",
          "2",
        ]);
        const sum = out.end.sum;
        assert(sum.packets > 1000, `iperf3 -u datagrams: ${JSON.stringify(sum)}`);
        assert(sum.lost_percent < 10, `iperf3 -u loss: ${sum.lost_percent}%`);
      }
    } finally {
      await client.stop();
      await server.daemon.stop();
      iperfd?.kill();
      await iperfd?.status;
      echo.close();
      await dns.stop();
    }
  },
});

Deno.test({
  name: "e2e mappings: IN TCP and IN UDP reach services on the client; a restart brings them back",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin(); // the client's local service
    const echo = udpEcho();
    const inTcp = freePort();
    const inUdp = freePort("udp");
    const serverArgs = ["--allow-in-ports", `${inTcp},${inUdp}`];
    let server = await startServer(serverArgs);
    const client = await mappingClient(server.link, [
      "--tcp-mappings",
      `IN^127.0.0.1:${origin.port}^${inTcp}`,
      "--udp-mappings",
      `IN^${echo.port}^127.0.0.1:${inUdp}`,
      "--keepalive",
      "1",
    ]);
    try {
      await client.waitFor(new RegExp(`IN\\^127\\.0\\.0\\.1:${origin.port}\\^${inTcp}: up`));
      await client.waitFor(new RegExp(`IN\\^${echo.port}\\^127\\.0\\.0\\.1:${inUdp}: up`));
      const size = 16 * MiB;
      const tmp = await Deno.makeTempFile();
      let r = await curl(["-o", tmp, `http://127.0.0.1:${inTcp}/bytes/${size}?seed=9`]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(await sha256Hex(await Deno.readFile(tmp)), await sha256Hex(payload(size, 9)));
      const up = payload(4 * MiB, 3);
      await Deno.writeFile(tmp, up);
      r = await curl(["--data-binary", `@${tmp}`, `http://127.0.0.1:${inTcp}/upload`]);
      assertEquals(new TextDecoder().decode(r.stdout), `${up.length} ${await sha256Hex(up)}`);
      const u = await udpAsk(inUdp, new TextEncoder().encode("in-udp"));
      assertEquals(new TextDecoder().decode(u!), "echo:in-udp");
      // The server restarts (same key, same port): the client registers its mappings again.
      const key = server.link;
      const port = server.port;
      await server.daemon.stop();
      const mark = client.output.length;
      const restarted = spawnDeno("server", "server/main.ts", [
        "--listen",
        `127.0.0.1:${port}`,
        "--key",
        decodeKeyHex(key),
        ...serverArgs,
      ]);
      server = { ...server, daemon: restarted };
      await restarted.waitFor(/ready:/);
      await client.waitFor(
        new RegExp(`IN\\^127\\.0\\.0\\.1:${origin.port}\\^${inTcp}: up`),
        30_000,
        mark,
      );
      r = await curl(["-o", tmp, `http://127.0.0.1:${inTcp}/bytes/${MiB}?seed=10`]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(await sha256Hex(await Deno.readFile(tmp)), await sha256Hex(payload(MiB, 10)));
      await client.waitFor(
        new RegExp(`IN\\^${echo.port}\\^127\\.0\\.0\\.1:${inUdp}: up`),
        30_000,
        mark,
      );
      const u2 = await udpAsk(inUdp, new TextEncoder().encode("again"));
      assertEquals(new TextDecoder().decode(u2!), "echo:again");
      await Deno.remove(tmp);
      // The client goes: its session closes, and the server's listeners with it.
      await client.stop();
      let open = true;
      for (let i = 0; i < 50 && open; i++) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port: inTcp })).close();
          await sleep(100);
        } catch {
          open = false;
        }
      }
      assert(!open, "the IN listener closed with the session");
    } finally {
      await client.stop();
      await server.daemon.stop();
      echo.close();
      await origin.close();
    }
  },
});

/** The hex key inside a share link (base64url → hex). */
function decodeKeyHex(link: string): string {
  const b64 = link.slice("ostp://".length, link.indexOf("@")).replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Array.from(bin, (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
}

Deno.test({
  name: "e2e mappings: heartbeats off and on; a transfer intact across ten hops (--hop-interval 5)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const server = await startServer();
    const out = freePort();
    // Heartbeats off: an idle session sends nothing for a while and stays up.
    const quiet = await mappingClient(server.link, [
      "--tcp-mappings",
      `OUT^${freePort()}^127.0.0.1:${origin.port}`,
      "--heartbeat-interval",
      "0",
      "--heartbeat-timeout",
      "0",
    ]);
    try {
      await sleep(1000);
      const before = (await quiet.statsDump()).stats.packetsSent;
      await sleep(3000);
      const after = (await quiet.statsDump()).stats.packetsSent;
      // At most an ACK of the server's own keepalive (every 25 s) can fall in the window.
      assert(after - before <= 1, `no heartbeat while idle (${after - before} packets in 3 s)`);
    } finally {
      await quiet.stop();
    }
    // Heartbeats on (every second), and a hop every 5 s under a long transfer.
    const client = await mappingClient(server.link, [
      "--tcp-mappings",
      `OUT^${out}^127.0.0.1:${origin.port}`,
      "--heartbeat-interval",
      "1",
      "--heartbeat-timeout",
      "10",
      "--hop-interval",
      "5",
    ]);
    try {
      const b0 = (await client.statsDump()).stats.packetsSent;
      await sleep(2500);
      const b1 = (await client.statsDump()).stats.packetsSent;
      assert(b1 - b0 >= 2, `heartbeats while idle (${b1 - b0} packets in 2.5 s)`);
      const ports = new Set<number>();
      const watch = setInterval(async () => {
        try {
          ports.add((await client.statsDump()).sessions[0].localPort);
        } catch {
          // stopping
        }
      }, 1000);
      // ~60 s at 6 MiB/s: twelve hops at 5 s.
      const size = 360 * MiB;
      const tmp = await Deno.makeTempFile();
      const r = await curl([
        "--limit-rate",
        "6M",
        "-o",
        tmp,
        `http://127.0.0.1:${out}/bytes/${size}?seed=5`,
      ]);
      clearInterval(watch);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(await sha256Hex(await Deno.readFile(tmp)), await sha256Hex(payload(size, 5)));
      await Deno.remove(tmp);
      assert(ports.size >= 10, `ten or more local ports during the transfer: ${ports.size}`);
      assertEquals(client.count(/connected to \S+ in /), 1, "no new handshake");
    } finally {
      await client.stop();
      await server.daemon.stop();
      await origin.close();
    }
  },
});

Deno.test({
  name:
    "e2e mappings: OUT mappings go through the router — a rule sends one direct, the other tunnels",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    // The server's built-in egress policy refuses loopback: only the direct mapping can succeed.
    const server = await startServer([EGRESS_DEFAULT]);
    const direct = freePort();
    const tunneled = freePort();
    const dir = await Deno.makeTempDir();
    const cfg = `${dir}/client.json`;
    await Deno.writeTextFile(
      cfg,
      JSON.stringify({
        rules: [{ inbound: ["mapping"], port: origin.port, outbound: "direct" }],
        mappings: {
          tcp: [`OUT^${direct}^127.0.0.1:${origin.port}`, `OUT^${tunneled}^127.0.0.1:1`],
        },
      }),
    );
    const client = await mappingClient(server.link, ["-c", cfg]);
    try {
      const r = await curl([`http://127.0.0.1:${direct}/hello`]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(new TextDecoder().decode(r.stdout), "hello\n");
      // The other mapping's target is not matched by the rule: the tunnel, where the server's
      // policy refuses loopback, so the connection is closed without an answer.
      const refused = await curl(["-m", "5", `http://127.0.0.1:${tunneled}/hello`]);
      assert(refused.code !== 0, "the tunneled mapping to the server's loopback is refused");
      const st = await client.statsDump();
      const hits = st.rules as { rule: number; outbound: string; hits: number }[];
      assert(
        hits.some((h) => h.rule === 0 && h.outbound === "direct" && h.hits >= 1),
        JSON.stringify(hits),
      );
      // The server's reason comes back to the client's log.
      await client.waitFor(
        /tcp mapping OUT\^\d+\^127\.0\.0\.1:1: not allowed: 127\.0\.0\.1 is loopback/,
      );
    } finally {
      await client.stop();
      await server.daemon.stop();
      await origin.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
