/**
 * The TUN inbound with the kernel's own TCP as the peer: a TUN device in a
 * namespace this test makes, its default routes (IPv4 and IPv6) into the
 * TUN; curl, ping and the resolver inside the namespace; the inbound, the
 * userspace stack and an outbound that carries every flow to a local origin
 * in this process. Byte-exact transfers both ways, many connections at once,
 * IPv6, a refused port, ICMP echo, and DNS answered through the relay with
 * the name remembered for the next connection.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { payload, sha256Hex, startOrigin } from "../support/daemons.ts";
import { canUseNetns, run } from "../support/netns.ts";
import { which } from "../support/sh.ts";
import { startDnsmasq } from "../support/dnsmasq.ts";
import { LinuxTun } from "../../ffi/tun_linux.ts";
import { TunInbound } from "../../client/inbound/tun.ts";
import { NameMap } from "../../client/dns/name_map.ts";
import { DnsRelay } from "../../client/dns/dns_relay.ts";
import { DirectOutbound } from "../../client/outbound/direct.ts";
import { DialError, type Duplex } from "../../shared/duplex.ts";
import type { FlowContext, Outbound } from "../../client/outbound/outbound.ts";

const enabled = await canUseNetns() && !!(await which("curl")) && !!(await which("dnsmasq"));
if (!enabled) console.log("SKIPPED netns TUN inbound tests: need root, ip netns, curl, dnsmasq");

const dec = new TextDecoder();
const MiB = 1024 * 1024;

async function inNs(ns: string, cmd: string, ...args: string[]) {
  const out = await new Deno.Command("ip", {
    args: ["netns", "exec", ns, cmd, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Carries every TCP flow to the local origin (port 80) or refuses (anything else); UDP direct. */
class TestOutbound implements Outbound {
  readonly name = "test";
  readonly dials: FlowContext[] = [];
  private readonly udp = new DirectOutbound();
  constructor(private readonly originPort: number, private readonly dnsPort: number) {}
  async dial(ctx: FlowContext): Promise<Duplex> {
    this.dials.push(ctx);
    if (ctx.target.port !== 80) throw new DialError("refused", "nothing listens there");
    return await Deno.connect({ hostname: "127.0.0.1", port: this.originPort });
  }
  openUdp(
    ctx: FlowContext,
    onReply: (from: { host: string; port: number }, d: Uint8Array) => void,
  ) {
    // The DNS relay's upstream is the local dnsmasq; other UDP is refused here.
    if (ctx.inbound !== "tun-dns") return Promise.reject(new DialError("denied", "no UDP"));
    return this.udp.openUdp({ ...ctx, target: { host: "127.0.0.1", port: this.dnsPort } }, onReply)
      .then((f) => ({
        send: (_t: { host: string; port: number }, d: Uint8Array) =>
          f.send({ host: "127.0.0.1", port: this.dnsPort }, d),
        close: () => f.close(),
      }));
  }
  close() {
    this.udp.close();
  }
}

Deno.test({
  name:
    "netns: kernel TCP through the TUN inbound — 64 MiB each way, 200 at once, IPv6, refusal, ping, DNS",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const id = crypto.randomUUID().slice(0, 6);
    const ns = `ostpti-${id}`;
    const etc = `/etc/netns/${ns}`;
    const origin = startOrigin();
    const dnsmasq = startDnsmasq({ records: ["--host-record=origin.test,10.99.7.7"] });
    const dnsPort = dnsmasq.port;
    let dev: LinuxTun | null = null;
    let inbound: TunInbound | null = null;
    const outbound = new TestOutbound(origin.port, dnsPort);
    const names = new NameMap();
    const relay = new DnsRelay({
      upstream: { host: "127.0.0.1", port: dnsPort },
      outbound,
      names,
      timeoutMs: 500,
    });
    try {
      await run("ip", "netns", "add", ns);
      await Deno.mkdir(etc, { recursive: true });
      await Deno.writeTextFile(`${etc}/resolv.conf`, "nameserver 10.99.0.53\noptions attempts:5\n");
      await run("ip", "-n", ns, "link", "set", "lo", "up");
      dev = LinuxTun.open({
        name: "ostpti0",
        netns: ns,
        mtu: 1500,
        addresses: [{ address: "10.99.0.1", prefix: 24 }, { address: "fd99::1", prefix: 64 }],
      });
      await run("ip", "-n", ns, "route", "add", "default", "dev", "ostpti0");
      await run("ip", "-n", ns, "-6", "route", "add", "default", "dev", "ostpti0");
      inbound = new TunInbound({
        device: dev,
        outbound,
        names,
        dns: relay,
        dnsAddresses: [new Uint8Array([10, 99, 0, 53])],
        hijackDns: false,
        sniffWhen: (ctx) => ctx.target.host === "10.99.0.4",
      });
      const running = inbound.run();

      // 64 MiB down, checked by hash.
      const size = 64 * MiB;
      const want = await sha256Hex(payload(size, 1));
      const down = await inNs(
        ns,
        "sh",
        "-c",
        `curl -sS -m 120 http://10.99.0.2/bytes/${size} | sha256sum`,
      );
      assertEquals(down.stdout.split(" ")[0], want, down.stderr);
      // 64 MiB up: the origin hashes what it got.
      const file = await Deno.makeTempFile();
      try {
        await Deno.writeFile(file, payload(size, 3));
        const up = await inNs(
          ns,
          "curl",
          "-sS",
          "-m",
          "120",
          "--data-binary",
          `@${file}`,
          "http://10.99.0.2/upload",
        );
        assertEquals(up.stdout.trim(), `${size} ${await sha256Hex(payload(size, 3))}`, up.stderr);
      } finally {
        await Deno.remove(file);
      }
      // 200 connections at once.
      const many = await inNs(
        ns,
        "sh",
        "-c",
        "seq 200 | xargs -P 200 -I{} curl -sS -m 60 -o /dev/null -w '%{http_code}\\n' " +
          "http://10.99.0.3/bytes/65536 | sort | uniq -c",
      );
      assertEquals(many.stdout.trim(), "200 200", many.stderr);
      // IPv6.
      const six = await inNs(
        ns,
        "sh",
        "-c",
        "curl -sS -m 30 -g 'http://[fd99::2]/bytes/1048576' | sha256sum",
      );
      assertEquals(six.stdout.split(" ")[0], await sha256Hex(payload(MiB, 1)), six.stderr);
      // A refused port: an immediate error, not a timeout.
      const t0 = performance.now();
      const refused = await inNs(ns, "curl", "-sS", "-m", "10", "http://10.99.0.2:81/");
      assertEquals(refused.code, 7, refused.stderr);
      assert(performance.now() - t0 < 5000, "refused at once");
      // ICMP echo answered by the stack.
      if (await which("ping")) {
        const ping = await inNs(ns, "ping", "-c", "2", "-W", "2", "10.99.0.9");
        assertEquals(ping.code, 0, ping.stdout + ping.stderr);
      }
      // DNS through the relay; the name is remembered and the next connection routed by it.
      const dns = await inNs(ns, "getent", "ahostsv4", "origin.test");
      assert(dns.stdout.includes("10.99.7.7"), `resolved: ${dns.stdout} ${dns.stderr}`);
      outbound.dials.length = 0;
      const byName = await inNs(ns, "curl", "-sS", "-m", "20", "http://origin.test/hello");
      assertEquals(byName.stdout, "hello\n", byName.stderr);
      assertEquals(outbound.dials[0]?.domain, "origin.test", "routed by the remembered name");
      assertEquals(outbound.dials[0]?.target.host, "10.99.7.7", "to the address the app chose");
      // No DNS name for an address: the HTTP Host of the first bytes names the flow.
      outbound.dials.length = 0;
      const sniffed = await inNs(
        ns,
        "curl",
        "-sS",
        "-m",
        "20",
        "-H",
        "Host: sniffed.example",
        "http://10.99.0.4/hello",
      );
      assertEquals(sniffed.stdout, "hello\n", sniffed.stderr);
      assertEquals(outbound.dials[0]?.domain, "sniffed.example", "named by its Host header");
      assertEquals(inbound.stats.sniffed, 1);
      assert(inbound.stack.bufferedBytes < 8 * MiB, "buffers drained");
      inbound.close();
      dev.close();
      await running;
    } finally {
      inbound?.close();
      dev?.close();
      relay.close();
      outbound.close();
      await dnsmasq.stop();
      await origin.close();
      await run("ip", "netns", "del", ns).catch(() => {});
      await Deno.remove(etc, { recursive: true }).catch(() => {});
    }
  },
});
