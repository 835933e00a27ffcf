/**
 * IFF_VNET_HDR + TSO against plain packets, on the Linux TUN device (root):
 *
 *   deno run --allow-all tests/bench/tun_offload.ts [seconds=5] [rounds=2]
 *
 * For each mode a fresh namespace holds the TUN (10.79.0.1/24, MTU 1500); a
 * kernel TCP sender inside it (a Deno client via `ip netns exec`, writing
 * 256 KiB chunks as fast as it can) connects to 10.79.0.2:5001, which routes
 * into the TUN. Here a minimal fixed-purpose acker answers: SYN-ACK (MSS
 * 1460, window scale 7), then one cumulative ACK per read batch with a big
 * window. With plain packets the kernel sends MTU-sized segments; with the
 * virtio header and TSO it sends GSO super-segments up to 64 KiB. Reported:
 * bytes/s received and this process's CPU seconds per GB (user + system,
 * FFI worker threads included). No checksum is verified here in either mode
 * (a real stack would verify the plain mode's, and not need to with
 * CSUM_PARTIAL). Prints one JSON line per mode at the end.
 * @module
 */

import process from "node:process";
import { LinuxTun } from "../../ffi/tun_linux.ts";
import { CSUM_PARTIAL, PacketBatch, readSlotSize } from "../../shared/tun/device.ts";

const seconds = Number(Deno.args[0] ?? 5);
const rounds = Number(Deno.args[1] ?? 2);

async function run(...a: string[]): Promise<string> {
  const r = await new Deno.Command(a[0], { args: a.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  if (!r.success) throw new Error(`${a.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
  return new TextDecoder().decode(r.stdout);
}

function sum16(b: Uint8Array, off: number, len: number, acc: number): number {
  let s = acc;
  const end = off + len;
  let i = off;
  for (; i + 1 < end; i += 2) s += (b[i] << 8) | b[i + 1];
  if (i < end) s += b[i] << 8;
  return s;
}
function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** Writes an IPv4+TCP segment (no payload) into `out`; returns its length. */
function tcpSegment(
  out: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  sport: number,
  dport: number,
  seq: number,
  ack: number,
  flags: number,
  window: number,
  syn: boolean,
): number {
  const optLen = syn ? 8 : 0;
  const tl = 20 + optLen;
  const len = 20 + tl;
  const v = new DataView(out.buffer, out.byteOffset, len);
  out.fill(0, 0, len);
  out[0] = 0x45;
  v.setUint16(2, len);
  out[6] = 0x40; // DF
  out[8] = 64;
  out[9] = 6;
  out.set(src, 12);
  out.set(dst, 16);
  v.setUint16(10, fold(sum16(out, 0, 20, 0)));
  v.setUint16(20, sport);
  v.setUint16(22, dport);
  v.setUint32(24, seq >>> 0);
  v.setUint32(28, ack >>> 0);
  out[32] = (tl / 4) << 4;
  out[33] = flags;
  v.setUint16(34, window);
  if (syn) {
    out[40] = 2; // MSS
    out[41] = 4;
    v.setUint16(42, 1460);
    out[44] = 1; // NOP
    out[45] = 3; // window scale
    out[46] = 3;
    out[47] = 7;
  }
  let acc = sum16(src, 0, 4, 0);
  acc = sum16(dst, 0, 4, acc);
  acc += 6 + tl;
  v.setUint16(36, fold(sum16(out, 20, tl, acc)));
  return len;
}

interface Result {
  mode: string;
  bytes: number;
  seconds: number;
  bytesPerSecond: number;
  cpuSecondsPerGB: number;
  packets: number;
  meanPacket: number;
  batches: number;
  dupAcks: number;
  badChecksums: number;
  senderCpuSecondsPerGB: number;
  offload: unknown;
}

async function measure(offload: boolean, verify: boolean): Promise<Result> {
  const id = Array.from(
    crypto.getRandomValues(new Uint8Array(3)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const ns = `ostptunb-${id}`;
  await run("ip", "netns", "add", ns);
  let dev: LinuxTun | null = null;
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await run("ip", "-n", ns, "link", "set", "lo", "up");
    dev = LinuxTun.open({
      name: `tb${id}`,
      mtu: 1500,
      addresses: [{ address: "10.79.0.1", prefix: 24 }],
      offload,
      netns: ns,
    });
    // A deep device queue so a burst waits for the acker instead of being
    // dropped (this acker does no loss recovery beyond duplicate ACKs).
    await run("ip", "-n", ns, "link", "set", "dev", dev.name, "txqueuelen", "10000");
    await Deno.writeTextFile(
      script,
      `import process from "node:process";
       const c = await Deno.connect({ hostname: "10.79.0.2", port: 5001 });
       const b = new Uint8Array(256 * 1024);
       const end = Date.now() + ${seconds * 1000};
       const u0 = process.cpuUsage();
       while (Date.now() < end) await c.write(b);
       const u1 = process.cpuUsage();
       c.close();
       console.log((u1.user - u0.user + u1.system - u0.system) / 1e6);`,
    );
    const sender = new Deno.Command("ip", {
      args: ["netns", "exec", ns, Deno.execPath(), "run", "-A", script],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const senderOut = new Response(sender.stdout).text();
    const me = new Uint8Array([10, 79, 0, 2]);
    const rx = new PacketBatch(64, readSlotSize(dev));
    const tx = new PacketBatch(4, 128);
    const ISS = 1000;
    let rcvNxt = 0;
    let peer: Uint8Array | null = null;
    let peerPort = 0;
    let bytes = 0;
    let packets = 0;
    let batches = 0;
    let dups = 0;
    let badSums = 0;
    let t0 = 0;
    let cpu0 = { user: 0, system: 0 };
    let done = false;
    while (!done) {
      const n = await dev.readBatch(rx);
      if (n === 0) break;
      batches++;
      let needAck = false;
      let synAck = false;
      for (let i = 0; i < n; i++) {
        const p = rx.slots[i];
        const len = rx.lengths[i];
        if (len < 40 || p[0] !== 0x45 || p[9] !== 6) continue;
        const v = new DataView(p.buffer, p.byteOffset, len);
        if (v.getUint16(22) !== 5001) continue;
        const flags = p[33];
        const seq = v.getUint32(24);
        const doff = (p[32] >> 4) * 4;
        const payload = len - 20 - doff;
        if (flags & 0x02) { // SYN
          peer = p.slice(12, 16);
          peerPort = v.getUint16(20);
          rcvNxt = (seq + 1) >>> 0;
          synAck = true;
          continue;
        }
        if (payload > 0 && verify && (rx.flags[i] & CSUM_PARTIAL) === 0) {
          // What a stack pays per plain segment: the TCP checksum over it all.
          let acc = sum16(p, 12, 8, 6 + len - 20);
          acc = sum16(p, 20, len - 20, acc);
          if (fold(acc) !== 0) badSums++;
        }
        if (payload > 0) {
          if (t0 === 0) {
            t0 = performance.now();
            cpu0 = process.cpuUsage();
          }
          packets++;
          if (seq === rcvNxt) {
            rcvNxt = (rcvNxt + payload) >>> 0;
            bytes += payload;
            needAck = true;
          } else if (peer !== null) {
            // Out of order (a drop before us): a duplicate ACK at once, so
            // the sender fast-retransmits instead of waiting for its RTO.
            tx.clear();
            tx.lengths[0] = tcpSegment(
              tx.slots[0],
              me,
              peer,
              5001,
              peerPort,
              ISS + 1,
              rcvNxt,
              0x10,
              65535,
              false,
            );
            tx.count = 1;
            dev.writeBatch(tx);
            dups++;
          }
        }
        if (flags & 0x01) { // FIN
          rcvNxt = (rcvNxt + 1) >>> 0;
          needAck = true;
          done = true;
        }
      }
      if (peer === null) continue;
      tx.clear();
      if (synAck) {
        tx.lengths[0] = tcpSegment(
          tx.slots[0],
          me,
          peer,
          5001,
          peerPort,
          ISS,
          rcvNxt,
          0x12,
          65535,
          true,
        );
        tx.count = 1;
      } else if (needAck) {
        tx.lengths[0] = tcpSegment(
          tx.slots[0],
          me,
          peer,
          5001,
          peerPort,
          ISS + 1,
          rcvNxt,
          done ? 0x11 : 0x10,
          65535,
          false,
        );
        tx.count = 1;
      }
      if (tx.count > 0) dev.writeBatch(tx);
    }
    const elapsed = (performance.now() - t0) / 1000;
    const cpu1 = process.cpuUsage();
    const cpuSec = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / 1e6;
    await sender.status;
    const senderCpu = Number((await senderOut).trim());
    return {
      mode: offload ? "vnet-hdr + TSO" : verify ? "plain + verify" : "plain",
      bytes,
      seconds: Number(elapsed.toFixed(2)),
      bytesPerSecond: Math.round(bytes / elapsed),
      cpuSecondsPerGB: Number((cpuSec / (bytes / 1e9)).toFixed(2)),
      packets,
      meanPacket: Math.round(bytes / packets),
      batches,
      dupAcks: dups,
      badChecksums: badSums,
      senderCpuSecondsPerGB: Number((senderCpu / (bytes / 1e9)).toFixed(2)),
      offload: dev.offload,
    };
  } finally {
    dev?.close();
    await Deno.remove(script).catch(() => {});
    await run("ip", "netns", "del", ns).catch(() => {});
  }
}

if (Deno.uid() !== 0) {
  console.log("SKIPPED tun offload bench: needs root (namespaces and /dev/net/tun)");
  Deno.exit(0);
}
const results: Result[] = [];
for (let r = 0; r < rounds; r++) {
  for (const [offload, verify] of [[false, false], [false, true], [true, false]]) {
    const res = await measure(offload, verify);
    results.push(res);
    console.log(
      `${res.mode.padEnd(15)} ${(res.bytesPerSecond * 8 / 1e9).toFixed(2)} Gbit/s  ` +
        `${res.cpuSecondsPerGB} CPU-s/GB  ${res.packets} segments of ${res.meanPacket} B mean, ` +
        `${res.batches} batches, ${res.dupAcks} dup ACKs; sender ${res.senderCpuSecondsPerGB} CPU-s/GB`,
    );
  }
}
for (const r of results) console.log(JSON.stringify(r));
