/**
 * The upstream-proxy mode's kill switch on a real kernel, both backends: a
 * "host" namespace whose default routes (IPv4 and IPv6) lead over a veth to
 * an "outside" namespace that listens everywhere (TCP on the proxy port and
 * another, UDP echo on 53 and 5353). With the switch up, only the proxy's
 * address and port and DNS to the allowed resolver get through; every other
 * TCP connect is refused at once (the outside listener would have accepted:
 * nothing left), other UDP gets no answer, IPv6 is covered, traffic into the
 * TUN stand-in (a TUN device nobody reads) is not blocked. The journal's undo leaves
 * the firewall exactly as it found it.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { canUseNetns, run } from "../support/netns.ts";
import { which } from "../support/sh.ts";
import { HostJournal } from "../../shared/host/journal.ts";
import { killSwitchChanges } from "../../client/tun/kill_switch.ts";

const enabled = await canUseNetns() && !!(await which("nft"));
if (!enabled) console.log("SKIPPED netns kill switch tests: need root, ip netns, nft");
const haveIptables = !!(await which("iptables")) && !!(await which("ip6tables"));

const dec = new TextDecoder();
const HOST4 = "10.209.0.1";
const OUT4 = "10.209.0.2";
/** A second outside address: the proxy's port there is not the proxy. */
const OTHER4 = "10.209.0.3";
const HOST6 = "fd00:209::1";
const OUT6 = "fd00:209::2";

const LISTENER = `
const addrs = Deno.args;
for (const hostname of addrs) {
  for (const port of [8080, 8081, 53]) {
    const l = Deno.listen({ hostname, port });
    (async () => { for await (const c of l) c.close(); })();
  }
  for (const port of [53, 5353]) {
    const u = Deno.listenDatagram({ transport: "udp", hostname, port });
    (async () => { for await (const [d, from] of u) await u.send(d, from); })();
  }
}
console.log("ready");
`;

interface Bed {
  host: string;
  outside: string;
  listener: Deno.ChildProcess;
  dir: string;
  close(): Promise<void>;
}

async function makeBed(): Promise<Bed> {
  const id = [...crypto.getRandomValues(new Uint8Array(3))].map((b) =>
    b.toString(16).padStart(2, "0")
  ).join("");
  const host = `ostpks-${id}`;
  const outside = `ostpko-${id}`;
  const dir = await Deno.makeTempDir({ prefix: "ostp-ks-" });
  let listener: Deno.ChildProcess | null = null;
  const close = async () => {
    try {
      listener?.kill("SIGKILL");
      await listener?.status;
    } catch { /* gone */ }
    for (const ns of [host, outside]) await run("ip", "netns", "del", ns).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    for (const ns of [host, outside]) {
      await run("ip", "netns", "add", ns);
      await run("ip", "-n", ns, "link", "set", "lo", "up");
    }
    await run(
      "ip",
      "link",
      "add",
      `kh${id}`,
      "netns",
      host,
      "type",
      "veth",
      "peer",
      "name",
      `ko${id}`,
      "netns",
      outside,
    );
    await run("ip", "-n", host, "addr", "add", `${HOST4}/24`, "dev", `kh${id}`);
    await run("ip", "-n", host, "addr", "add", `${HOST6}/64`, "dev", `kh${id}`, "nodad");
    await run("ip", "-n", outside, "addr", "add", `${OUT4}/24`, "dev", `ko${id}`);
    await run("ip", "-n", outside, "addr", "add", `${OTHER4}/24`, "dev", `ko${id}`);
    await run("ip", "-n", outside, "addr", "add", `${OUT6}/64`, "dev", `ko${id}`, "nodad");
    await run("ip", "-n", host, "link", "set", `kh${id}`, "up");
    await run("ip", "-n", outside, "link", "set", `ko${id}`, "up");
    await run("ip", "-n", host, "route", "add", "default", "via", OUT4);
    await run("ip", "-n", host, "-6", "route", "add", "default", "via", OUT6);
    // The TUN's stand-in (no reader: what enters it is dropped): what is routed into it must pass.
    await run("ip", "-n", host, "tuntap", "add", "dev", "ostpks0", "mode", "tun");
    await run("ip", "-n", host, "link", "set", "ostpks0", "up");
    await run("ip", "-n", host, "route", "add", "198.51.100.0/24", "dev", "ostpks0");
    await Deno.writeTextFile(`${dir}/listener.ts`, LISTENER);
    listener = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        outside,
        Deno.execPath(),
        "run",
        "-A",
        "--unstable-net",
        `${dir}/listener.ts`,
        OUT4,
        OTHER4,
        OUT6,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = listener.stdout.getReader();
    const first = await reader.read();
    reader.releaseLock();
    assert(dec.decode(first.value ?? new Uint8Array()).includes("ready"), "listener ready");
    return { host, outside, listener, dir, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Exit code of a TCP connect from the host namespace: 0 connected, 1 refused, 124 timed out. */
async function tcp(bed: Bed, ip: string, port: number): Promise<{ code: number; ms: number }> {
  const t0 = performance.now();
  const r = await new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      bed.host,
      "timeout",
      "2",
      "bash",
      "-c",
      `exec 3<>/dev/tcp/${ip}/${port}`,
    ],
    stdout: "null",
    stderr: "null",
  }).output();
  return { code: r.code, ms: performance.now() - t0 };
}

/** True when a UDP datagram to ip:port from the host namespace is echoed within a second. */
async function udpEcho(bed: Bed, ip: string, port: number): Promise<boolean> {
  const r = await new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      bed.host,
      "timeout",
      "1",
      "bash",
      "-c",
      `exec 3<>/dev/udp/${ip}/${port}; printf q >&3; head -c1 <&3`,
    ],
    stdout: "piped",
    stderr: "null",
  }).output();
  return dec.decode(r.stdout) === "q";
}

async function firewall(bed: Bed): Promise<string> {
  const parts = [await run("ip", "netns", "exec", bed.host, "nft", "list", "ruleset")];
  if (haveIptables) {
    for (const t of ["iptables-save", "ip6tables-save"]) {
      const out = await run("ip", "netns", "exec", bed.host, t).catch(() => "");
      // iptables-save prints a timestamp and packet counters: compare the rules only.
      parts.push(
        out.split("\n").filter((l) => !l.startsWith("#")).map((l) => l.replace(/\[\d+:\d+\]/g, ""))
          .join("\n"),
      );
    }
  }
  return parts.join("\n");
}

for (const backend of ["nft", "iptables"] as const) {
  Deno.test({
    name:
      `netns: kill switch (${backend}) lets out only the TUN, the proxy and allowed DNS; undo is exact`,
    ignore: !enabled || (backend === "iptables" && !haveIptables),
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const bed = await makeBed();
      try {
        // Before: everything reaches the outside.
        assertEquals((await tcp(bed, OUT4, 8081)).code, 0, "open before");
        assertEquals((await tcp(bed, OUT6, 8081)).code, 0, "open before (IPv6)");
        assert(await udpEcho(bed, OUT4, 5353), "UDP before");
        if (backend === "iptables") {
          // iptables-nft makes its (empty, accept-all) filter table on first use and leaves it:
          // the baseline has it already, so the comparison sees only what the switch did.
          for (const t of ["iptables", "ip6tables"]) {
            for (const op of ["-A", "-D"]) {
              await run("ip", "netns", "exec", bed.host, t, "-w", op, "OUTPUT", "-j", "ACCEPT");
            }
          }
        }
        const before = await firewall(bed);
        const { journal } = await HostJournal.open(`${bed.dir}/state/journal`, {
          owner: "kill switch test",
        });
        for (
          const c of killSwitchChanges({
            tun: "ostpks0",
            proxies: [{ ip: OUT4, port: 8080 }, { ip: OUT6, port: 8080 }],
            dns: [OUT4],
            backend,
            exec: ["ip", "netns", "exec", bed.host],
          })
        ) await journal.apply(c);
        // The proxy, on its address and port only.
        assertEquals((await tcp(bed, OUT4, 8080)).code, 0, "the proxy");
        assertEquals((await tcp(bed, OUT6, 8080)).code, 0, "the proxy (IPv6)");
        for (const [ip, port] of [[OUT4, 8081], [OTHER4, 8080], [OUT6, 8081]] as const) {
          const r = await tcp(bed, ip, port);
          assertEquals(r.code, 1, `${ip}:${port} refused`);
          assert(r.ms < 1500, `${ip}:${port} refused at once (${r.ms.toFixed(0)} ms)`);
        }
        // DNS to the allowed resolver; not to another one, no other UDP.
        assert(await udpEcho(bed, OUT4, 53), "DNS to the allowed resolver");
        assertEquals((await tcp(bed, OUT4, 53)).code, 0, "DNS over TCP to the allowed resolver");
        assertEquals((await tcp(bed, OTHER4, 53)).code, 1, "DNS over TCP elsewhere refused");
        assert(!(await udpEcho(bed, OTHER4, 53)), "DNS to another resolver blocked");
        assert(!(await udpEcho(bed, OUT4, 5353)), "other UDP blocked");
        assert(!(await udpEcho(bed, OUT6, 53)), "IPv6 DNS to an unlisted resolver blocked");
        // Into the TUN: not refused (the device swallows the SYN, so the connect times out).
        assertEquals((await tcp(bed, "198.51.100.1", 80)).code, 124, "the TUN is not blocked");
        const report = await journal.undoAll();
        assertEquals(report.failed.length, 0, JSON.stringify(report));
        assertEquals(await firewall(bed), before, "the firewall is as it was");
        assertEquals((await tcp(bed, OUT4, 8081)).code, 0, "open again");
      } finally {
        await bed.close();
      }
    },
  });
}
