/**
 * The Linux TUN device (`ffi/tun_linux.ts`) through the conformance suite,
 * the kernel as its peer: each test makes a uniquely named namespace, creates
 * the device inside it (configured over rtnetlink: MTU, 10.78.0.1/24,
 * fd78::1/64, up), sends echo requests to the kernel's own address from
 * 10.78.0.2 / fd78::2 and reads the kernel's replies; UDP comes from a socket
 * in the namespace (a Deno helper run with `ip netns exec`). The namespace is
 * always deleted. Root only.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { canUseNetns, run } from "../support/netns.ts";
import { LinuxTun } from "../../ffi/tun_linux.ts";
import { CSUM_PARTIAL, GSO_UDP_L4, PacketBatch, TunError } from "../../shared/tun/device.ts";
import {
  echoRequest,
  ipPacket,
  tunDeviceConformance,
  type TunHarness,
} from "../conformance/tun_device.ts";

const enabled = await canUseNetns();
if (!enabled) console.log("SKIPPED netns TUN device tests: need root, ip netns and /dev/net/tun");

const V4 = { local: new Uint8Array([10, 78, 0, 2]), peer: new Uint8Array([10, 78, 0, 1]) };
const V6 = {
  local: new Uint8Array([0xfd, 0x78, ...new Array(13).fill(0), 2]),
  peer: new Uint8Array([0xfd, 0x78, ...new Array(13).fill(0), 1]),
};

/** Sends the datagrams of SPEC (replaced by JSON) from a socket inside the namespace. */
const UDP_SENDER = [
  "const o = SPEC;",
  'const s = Deno.listenDatagram({ transport: "udp", hostname: o.bind, port: 0 });',
  "for (const p of o.payloads) {",
  '  await s.send(new Uint8Array(p), { transport: "udp", hostname: o.dst, port: o.port });',
  "}",
  "s.close();",
].join("\n");

/** Prints "ready", then length, first and last byte of three datagrams to 10.78.0.1:40100. */
const USO_RECEIVER = [
  'const s = Deno.listenDatagram({ transport: "udp", hostname: "10.78.0.1", port: 40100 });',
  'console.log("ready");',
  "const t = setTimeout(() => Deno.exit(2), 5000);",
  "for (let i = 0; i < 3; i++) {",
  "  const [d] = await s.receive();",
  "  console.log(d.length, d[0], d[d.length - 1]);",
  "}",
  "clearTimeout(t);",
  "s.close();",
].join("\n");

/**
 * An IPv4 UDP super-segment 10.78.0.2:5555 → 10.78.0.1:40100 with 3000 bytes
 * of payload (1200 × 1s, 1200 × 2s, 600 × 3s), its checksum left partial:
 * the pseudo-header sum over the super-segment's length, not complemented.
 */
function usoSuperSegment(): Uint8Array {
  const udp = new Uint8Array(8 + 3000);
  const uv = new DataView(udp.buffer);
  uv.setUint16(0, 5555);
  uv.setUint16(2, 40100);
  uv.setUint16(4, udp.length);
  udp.fill(1, 8, 1208);
  udp.fill(2, 1208, 2408);
  udp.fill(3, 2408);
  const pkt = ipPacket(V4.local, V4.peer, 17, udp);
  const pv = new DataView(pkt.buffer);
  let sum = 17 + udp.length + pv.getUint16(12) + pv.getUint16(14) + pv.getUint16(16) +
    pv.getUint16(18);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  pv.setUint16(26, sum);
  return pkt;
}

function uniqueName(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(4)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

async function harness(mtu: number, offload = false): Promise<TunHarness> {
  const id = uniqueName();
  const ns = `ostptun-${id}`;
  await run("ip", "netns", "add", ns);
  let dev: LinuxTun;
  try {
    await run("ip", "-n", ns, "link", "set", "lo", "up");
    dev = LinuxTun.open({
      name: `tt${id}`,
      mtu,
      addresses: [{ address: "10.78.0.1", prefix: 24 }, { address: "fd78::1", prefix: 64 }],
      offload,
      netns: ns,
    });
  } catch (e) {
    await run("ip", "netns", "del", ns).catch(() => {});
    throw e;
  }
  let closed = false;
  return {
    device: dev,
    v4: V4,
    v6: V6,
    async sendUdp(family, port, payloads) {
      const dst = family === 4 ? "10.78.0.2" : "fd78::2";
      const spec = JSON.stringify({
        bind: family === 4 ? "0.0.0.0" : "::",
        dst,
        port,
        payloads: payloads.map((p) => Array.from(p)),
      });
      const code = UDP_SENDER.replace("SPEC", () => spec);
      const file = await Deno.makeTempFile({ suffix: ".ts" });
      try {
        await Deno.writeTextFile(file, code);
        await run("ip", "netns", "exec", ns, Deno.execPath(), "run", "-A", "--unstable-net", file);
      } finally {
        await Deno.remove(file).catch(() => {});
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      dev.close();
      await run("ip", "netns", "del", ns).catch(() => {});
    },
  };
}

for (const mtu of [1500, 1280, 9000]) {
  tunDeviceConformance(`LinuxTun mtu ${mtu}`, () => harness(mtu), { ignore: !enabled });
}
tunDeviceConformance("LinuxTun mtu 1500 with IFF_VNET_HDR", () => harness(1500, true), {
  ignore: !enabled,
});

Deno.test({
  name: "LinuxTun: the device and its addresses exist only in the test's namespace",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const h = await harness(1400);
    try {
      const name = h.device.name;
      const root = await run("ip", "-o", "link", "show");
      assert(!root.includes(name), "not in the root namespace");
      const ns = (await run("ip", "netns", "list")).split("\n").find((l) =>
        l.startsWith(`ostptun-${name.slice(2)}`)
      )!.split(" ")[0];
      const addrs = await run("ip", "-n", ns, "-o", "addr", "show", "dev", name);
      assert(addrs.includes("10.78.0.1/24"), addrs);
      assert(addrs.includes("fd78::1/64"), addrs);
      const link = await run("ip", "-n", ns, "-o", "link", "show", "dev", name);
      assert(link.includes("mtu 1400") && link.includes(",UP"), link);
    } finally {
      await h.close();
    }
  },
});

Deno.test({
  name: "LinuxTun: a plain device rejects GSO, a vnet-hdr device reports its offloads",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const h = await harness(1500, true);
    try {
      assert(h.device.offload.tso && h.device.offload.checksum, "TSO and checksum on");
      // A plain echo still round-trips with a zero virtio header.
      const b = new PacketBatch(1, 65535);
      b.push(echoRequest(V4.local, V4.peer, 7, 7, 1500));
      assertEquals(h.device.writeBatch(b), 1);
      const rx = new PacketBatch(8, 65535);
      for (;;) {
        const n = await h.device.readBatch(rx);
        const p = rx.packet(n - 1);
        if (p[0] >> 4 === 4 && p[9] === 1) {
          assertEquals(p.length, 1500);
          break;
        }
      }
    } finally {
      await h.close();
    }
  },
});

Deno.test({
  name: "LinuxTun: a name that is too long is a RangeError, a bad netns a clear error",
  ignore: !enabled,
  fn() {
    let ok = false;
    try {
      LinuxTun.open("x".repeat(16));
    } catch (e) {
      ok = e instanceof RangeError;
    }
    assert(ok, "RangeError for a 16-byte name");
    try {
      LinuxTun.open({ name: "ttnope", netns: `ostptun-missing-${uniqueName()}` });
      throw new Error("opened in a missing namespace");
    } catch (e) {
      assert(String(e).includes("/run/netns/"), String(e));
    }
    assert(new TunError("permission", "x").kind === "permission");
  },
});

Deno.test({
  name: "LinuxTun: deleting the interface ends a pending read with 0 and closes the device",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const h = await harness(1500);
    try {
      const dev = h.device;
      const ns = (await run("ip", "netns", "list")).split("\n").find((l) =>
        l.startsWith(`ostptun-${dev.name.slice(2)}`)
      )!.split(" ")[0];
      const rb = new PacketBatch(8, 1500);
      const reading = (async () => {
        for (;;) {
          if ((await dev.readBatch(rb)) === 0) {
            return;
          }
        }
      })();
      await run("ip", "-n", ns, "link", "del", dev.name);
      const r = await Promise.race([
        reading.then(() =>
          "ended"
        ),
        new Promise((r) => setTimeout(() => r("still pending"), 5000)),
      ]);
      assertEquals(r, "ended");
      assert(dev.closed, "closed once the interface went away");
      const b = new PacketBatch(1, 1500);
      b.push(echoRequest(V4.local, V4.peer, 1, 1, 40));
      let kind = "";
      try {
        dev.writeBatch(b);
      } catch (e) {
        kind = e instanceof TunError ? e.kind : String(e);
      }
      assertEquals(kind, "closed");
    } finally {
      await h.close();
    }
  },
});

Deno.test({
  name: "LinuxTun with IFF_VNET_HDR: a written UDP super-segment (USO) arrives as datagrams",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const h = await harness(1500, true);
    const file = await Deno.makeTempFile({ suffix: ".ts" });
    let proc: Deno.ChildProcess | null = null;
    try {
      const dev = h.device;
      if (!dev.offload.uso) {
        console.log("SKIPPED USO write check: the kernel refused TUN_F_USO4|TUN_F_USO6");
        return;
      }
      const ns = (await run("ip", "netns", "list")).split("\n").find((l) =>
        l.startsWith(`ostptun-${dev.name.slice(2)}`)
      )!.split(" ")[0];
      await Deno.writeTextFile(file, USO_RECEIVER);
      proc = new Deno.Command("ip", {
        args: ["netns", "exec", ns, Deno.execPath(), "run", "-A", "--unstable-net", file],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const lines = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let out = "";
      while (!out.includes("ready\n")) {
        const r = await lines.read();
        if (r.done) {
          throw new Error("receiver ended early");
        }
        out += r.value;
      }
      const pkt = usoSuperSegment();
      const b = new PacketBatch(1, 65535);
      b.slots[0].set(pkt);
      b.lengths[0] = pkt.length;
      b.count = 1;
      b.gsoKind[0] = GSO_UDP_L4;
      b.gsoSize[0] = 1200;
      b.hdrLen[0] = 28;
      b.flags[0] = CSUM_PARTIAL;
      b.csumStart[0] = 20;
      b.csumOffset[0] = 6;
      assertEquals(dev.writeBatch(b), 1);
      while (out.trim().split("\n").length < 4) {
        const r = await lines.read();
        if (r.done) {
          break;
        }
        out += r.value;
      }
      assertEquals(out.trim().split("\n").slice(1), ["1200 1 1", "1200 2 2", "600 3 3"]);
      assertEquals((await proc.status).code, 0);
      proc = null;
    } finally {
      if (proc) {
        try {
          proc.kill();
        } catch { /* already gone */ }
        await proc.status;
      }
      await Deno.remove(file).catch(() => {});
      await h.close();
    }
  },
});

Deno.test({
  name: "LinuxTun: without CAP_NET_ADMIN the error says so (TunError permission)",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const ns = `ostptun-${uniqueName()}`;
    await run("ip", "netns", "add", ns);
    const file = await Deno.makeTempFile({ suffix: ".ts" });
    try {
      const tun = new URL("../../ffi/tun_linux.ts", import.meta.url).href;
      await Deno.writeTextFile(
        file,
        [
          `import { LinuxTun } from ${JSON.stringify(tun)};`,
          "try {",
          `  LinuxTun.open({ name: "ttperm", mtu: 1400, netns: ${JSON.stringify(ns)} });`,
          '  console.log("opened");',
          "} catch (e) {",
          '  console.log(e.name, e.kind, "|", e.message);',
          "}",
        ].join("\n"),
      );
      // Root keeps CAP_SYS_ADMIN (to enter the namespace) but loses CAP_NET_ADMIN.
      const r = await new Deno.Command("setpriv", {
        args: [
          "--bounding-set=-net_admin",
          "--inh-caps=-net_admin",
          Deno.execPath(),
          "run",
          "-A",
          file,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output().catch(() => null);
      if (r === null) {
        console.log("SKIPPED CAP_NET_ADMIN check: no setpriv");
        return;
      }
      const out = new TextDecoder().decode(r.stdout).trim();
      assert(out.startsWith("TunError permission |"), out);
      assert(out.includes("needs root or CAP_NET_ADMIN"), out);
    } finally {
      await Deno.remove(file).catch(() => {});
      await run("ip", "netns", "del", ns).catch(() => {});
    }
  },
});
