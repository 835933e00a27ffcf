/**
 * The conformance suite every {@link TunDevice} implementation passes. The
 * device under test plays the userspace stack's side; a *peer* plays the
 * network: it answers ICMP/ICMPv6 echo requests addressed to it (the Linux
 * kernel does this for its own address; {@link runEchoPeer} does it for the
 * in-memory pair) and can originate UDP datagrams towards the device.
 *
 * Packets of every size up to the MTU both ways (IPv4 and IPv6), batches of
 * every shape, ordering, the rejections the interface specifies (oversize,
 * malformed, offload, busy, slot), close with a read pending, and use after
 * close. Packets the peer sends on its own (a kernel's router solicitations,
 * MLD reports) are ignored wherever the suite waits for specific ones.
 * @module
 */

import { suiteTest } from "./suite.ts";
import { assert, assertEquals } from "../support/assert.ts";
import {
  GSO_TCP4,
  PacketBatch,
  readSlotSize,
  type TunDevice,
  TunError,
  type TunErrorKind,
} from "../../shared/tun/device.ts";

/** One address family's two ends: the device's (our stack's) and the peer's. */
export interface FamilyAddresses {
  /** Source address the suite uses for what the device writes (16 bytes for IPv6). */
  local: Uint8Array;
  /** Address of the peer, which answers echo requests (and sends UDP from). */
  peer: Uint8Array;
}

/** A device under test with its peer. */
export interface TunHarness {
  /** The device the suite reads and writes. */
  device: TunDevice;
  /** IPv4 addresses. */
  v4: FamilyAddresses;
  /** IPv6 addresses. */
  v6: FamilyAddresses;
  /**
   * Makes the peer send UDP datagrams with these payloads, in order, from
   * any port to `local:port` of family `family`; resolves once all were sent.
   */
  sendUdp(family: 4 | 6, port: number, payloads: Uint8Array[]): Promise<void>;
  /** Releases the device, the peer and anything they needed (idempotent). */
  close(): Promise<void>;
}

// ---- packet helpers (just enough for the suite) ----

function sum16(b: Uint8Array, off: number, len: number, acc: number): number {
  let s = acc;
  let i = off;
  const end = off + len;
  for (; i + 1 < end; i += 2) s += (b[i] << 8) | b[i + 1];
  if (i < end) s += b[i] << 8;
  return s;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** An IPv4 (20-byte header) or IPv6 (40-byte) packet around `l4` of protocol `proto`, checksums filled. */
export function ipPacket(
  src: Uint8Array,
  dst: Uint8Array,
  proto: number,
  l4: Uint8Array,
): Uint8Array {
  const v6 = src.length === 16;
  const hl = v6 ? 40 : 20;
  const p = new Uint8Array(hl + l4.length);
  const v = new DataView(p.buffer);
  if (v6) {
    v.setUint32(0, 0x60000000);
    v.setUint16(4, l4.length);
    p[6] = proto;
    p[7] = 64;
    p.set(src, 8);
    p.set(dst, 24);
  } else {
    p[0] = 0x45;
    v.setUint16(2, p.length);
    v.setUint16(4, (p.length * 31) & 0xffff);
    p[8] = 64;
    p[9] = proto;
    p.set(src, 12);
    p.set(dst, 16);
    v.setUint16(10, fold(sum16(p, 0, 20, 0)));
  }
  p.set(l4, hl);
  const csumAt = proto === 17 ? 6 : proto === 6 ? 16 : 2;
  // Pseudo-header for UDP, TCP and ICMPv6; plain ICMP has none.
  let acc = 0;
  if (proto !== 1) {
    acc = sum16(src, 0, src.length, 0);
    acc = sum16(dst, 0, dst.length, acc);
    acc += proto + l4.length;
  }
  v.setUint16(hl + csumAt, 0);
  let c = fold(sum16(p, hl, l4.length, acc));
  if (c === 0 && proto === 17) c = 0xffff;
  v.setUint16(hl + csumAt, c);
  return p;
}

/**
 * UDP datagrams from `from` (port 5353) to `to:port` as IP packets in one
 * batch of `slotSize` slots: what an in-memory peer sends for
 * {@link TunHarness.sendUdp}.
 */
export function udpBatch(
  from: Uint8Array,
  to: Uint8Array,
  port: number,
  payloads: Uint8Array[],
  slotSize: number,
): PacketBatch {
  const b = new PacketBatch(payloads.length, slotSize);
  for (const p of payloads) {
    const udp = new Uint8Array(8 + p.length);
    const v = new DataView(udp.buffer);
    v.setUint16(0, 5353);
    v.setUint16(2, port);
    v.setUint16(4, udp.length);
    udp.set(p, 8);
    b.push(ipPacket(from, to, 17, udp));
  }
  return b;
}

/** An ICMP (IPv4) or ICMPv6 echo request packet of exactly `total` bytes. */
export function echoRequest(
  src: Uint8Array,
  dst: Uint8Array,
  id: number,
  seq: number,
  total: number,
): Uint8Array {
  const v6 = src.length === 16;
  const l4 = new Uint8Array(total - (v6 ? 40 : 20));
  l4[0] = v6 ? 128 : 8;
  new DataView(l4.buffer).setUint16(4, id);
  new DataView(l4.buffer).setUint16(6, seq);
  for (let i = 8; i < l4.length; i++) l4[i] = (seq * 13 + i) & 0xff;
  return ipPacket(src, dst, v6 ? 58 : 1, l4);
}

/** Header length, protocol, source and destination offsets of `p` (IPv4 options honoured). */
function ipInfo(p: Uint8Array): { hl: number; proto: number; v6: boolean } | null {
  if (p.length < 20) return null;
  const ver = p[0] >> 4;
  if (ver === 4) return { hl: (p[0] & 15) * 4, proto: p[9], v6: false };
  if (ver === 6 && p.length >= 40) return { hl: 40, proto: p[6], v6: true };
  return null;
}

/** (id, seq) of an echo reply with identifier `id`, or null for any other packet. */
function echoReplySeq(p: Uint8Array, id: number): number | null {
  const ip = ipInfo(p);
  if (!ip) return null;
  const want = ip.v6 ? 58 : 1;
  if (ip.proto !== want || p.length < ip.hl + 8) return null;
  if (p[ip.hl] !== (ip.v6 ? 129 : 0)) return null;
  const v = new DataView(p.buffer, p.byteOffset);
  if (v.getUint16(ip.hl + 4) !== id) return null;
  return v.getUint16(ip.hl + 6);
}

/**
 * Plays the network for an in-memory device: answers every echo request on
 * `peer` (addresses swapped, type changed, checksums recomputed) until
 * `peer` is closed. Other packets are dropped.
 */
export async function runEchoPeer(peer: TunDevice): Promise<void> {
  const rx = new PacketBatch(64, readSlotSize(peer));
  const tx = new PacketBatch(64, peer.mtu);
  for (;;) {
    let n: number;
    try {
      n = await peer.readBatch(rx);
    } catch {
      return;
    }
    if (n === 0 || peer.closed) return;
    tx.clear();
    for (let i = 0; i < n; i++) {
      const p = rx.packet(i);
      const ip = ipInfo(p);
      if (!ip || ip.proto !== (ip.v6 ? 58 : 1) || p[ip.hl] !== (ip.v6 ? 128 : 8)) continue;
      const src = ip.v6 ? p.subarray(8, 24) : p.subarray(12, 16);
      const dst = ip.v6 ? p.subarray(24, 40) : p.subarray(16, 20);
      const l4 = p.slice(ip.hl);
      l4[0] = ip.v6 ? 129 : 0;
      tx.push(ipPacket(dst, src, ip.v6 ? 58 : 1, l4));
    }
    if (tx.count > 0 && !peer.closed) peer.writeBatch(tx);
  }
}

/**
 * Reads from `dev` until `want` packets satisfying `keep` arrived (others
 * are skipped); returns copies of them. Fails after `timeoutMs` by closing
 * the device (the only way to end a pending read).
 */
async function collect(
  dev: TunDevice,
  batch: PacketBatch,
  want: number,
  keep: (p: Uint8Array) => boolean,
  timeoutMs = 10_000,
): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    dev.close();
  }, timeoutMs);
  try {
    while (out.length < want) {
      const n = await dev.readBatch(batch);
      if (n === 0) break;
      assertEquals(n, batch.count, "readBatch result equals batch.count");
      for (let i = 0; i < n; i++) {
        const p = batch.packet(i);
        if (keep(p)) out.push(p.slice());
      }
    }
  } finally {
    clearTimeout(timer);
  }
  assert(!timedOut, `timed out with ${out.length} of ${want} packets`);
  return out;
}

async function expectTunError(fn: () => unknown, kind: TunErrorKind): Promise<void> {
  try {
    await fn();
  } catch (e) {
    assert(e instanceof TunError, `expected TunError(${kind}), got ${e}`);
    assertEquals(e.kind, kind, `TunError kind`);
    return;
  }
  throw new Error(`expected TunError(${kind}), nothing thrown`);
}

/**
 * Sends echo requests of every total size in `sizes` through `h.device`,
 * `window` at a time in one batch each, and checks each reply: same length,
 * same payload, in order.
 */
async function echoSizes(h: TunHarness, family: 4 | 6, sizes: number[], window: number) {
  const dev = h.device;
  const a = family === 4 ? h.v4 : h.v6;
  const id = 0x5a00 + family;
  const tx = new PacketBatch(window, dev.mtu);
  const rx = new PacketBatch(window, readSlotSize(dev));
  for (let k = 0; k < sizes.length; k += window) {
    tx.clear();
    const part = sizes.slice(k, k + window);
    part.forEach((size, j) => tx.push(echoRequest(a.local, a.peer, id, k + j, size)));
    assertEquals(dev.writeBatch(tx), part.length, "all requests accepted");
    const replies = await collect(dev, rx, part.length, (p) => echoReplySeq(p, id) !== null);
    replies.forEach((p, j) => {
      const seq = k + j;
      assertEquals(echoReplySeq(p, id), seq, "replies in order");
      assertEquals(p.length, part[j], `reply to seq ${seq} has the request's length`);
      const hl = family === 4 ? (p[0] & 15) * 4 : 40;
      for (let i = hl + 8; i < p.length; i++) {
        if (p[i] !== ((seq * 13 + (i - hl)) & 0xff)) throw new Error(`seq ${seq}: byte ${i}`);
      }
    });
  }
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** Options for {@link tunDeviceConformance}. */
export interface ConformanceOptions {
  /** Skip every test (e.g. not root); the caller prints why. */
  ignore?: boolean;
}

/**
 * Registers the suite under `label`; `make` builds a fresh device and peer
 * for each test, which the suite closes.
 */
export function tunDeviceConformance(
  label: string,
  make: () => Promise<TunHarness>,
  opts: ConformanceOptions = {},
): void {
  const test = suiteTest<TunHarness>(label, make, async (h) => {
    h.device.close();
    await h.close();
  }, opts.ignore ?? false);

  test("IPv4 packets of every size from 28 bytes to the MTU, both ways", async (h) => {
    await echoSizes(h, 4, range(28, h.device.mtu), 32);
  });

  test("IPv6 packets of every size from 48 bytes to the MTU, both ways", async (h) => {
    await echoSizes(h, 6, range(48, h.device.mtu), 32);
  });

  test("one large batch in, order kept across small reads", async (h) => {
    const dev = h.device;
    const id = 0x5b00;
    const tx = new PacketBatch(200, dev.mtu);
    for (let i = 0; i < 200; i++) {
      const size = i % 2 === 0 ? 28 + i : dev.mtu - i;
      tx.push(echoRequest(h.v4.local, h.v4.peer, id, i, size));
    }
    assertEquals(dev.writeBatch(tx, 0, 100), 100);
    assertEquals(dev.writeBatch(tx, 100), 100);
    const small = new PacketBatch(3, readSlotSize(dev));
    const got = await collect(dev, small, 200, (p) => echoReplySeq(p, id) !== null);
    assertEquals(got.map((p) => echoReplySeq(p, id)), range(0, 199));
    assertEquals(got.map((p) => p.length), range(0, 199).map((i) => tx.lengths[i]));
  });

  test("IPv4 and IPv6 interleaved in one batch", async (h) => {
    const dev = h.device;
    const id = 0x5c00;
    const tx = new PacketBatch(40, dev.mtu);
    for (let i = 0; i < 40; i++) {
      const a = i % 2 === 0 ? h.v4 : h.v6;
      tx.push(echoRequest(a.local, a.peer, id, i, 100 + i * 30));
    }
    assertEquals(dev.writeBatch(tx), 40);
    const got = await collect(dev, new PacketBatch(64, readSlotSize(dev)), 40, (p) => {
      return echoReplySeq(p, id) !== null;
    });
    // The two families may be answered by separate paths: order within each.
    const seqs = (v: number) => got.filter((p) => p[0] >> 4 === v).map((p) => echoReplySeq(p, id));
    assertEquals(seqs(4), range(0, 39).filter((i) => i % 2 === 0));
    assertEquals(seqs(6), range(0, 39).filter((i) => i % 2 === 1));
  });

  for (const family of [4, 6] as const) {
    test(`IPv${family} UDP datagrams from the peer arrive whole and in order`, async (h) => {
      const dev = h.device;
      const a = family === 4 ? h.v4 : h.v6;
      const hl = family === 4 ? 20 : 40;
      const maxPayload = dev.mtu - hl - 8;
      const port = 40000 + family;
      const payloads = range(0, 99).map((i) => {
        const n = i === 0 ? 0 : i === 1 ? maxPayload : (i * 37) % (maxPayload + 1);
        const b = new Uint8Array(n);
        for (let j = 0; j < n; j++) b[j] = (i * 7 + j) & 0xff;
        return b;
      });
      const rx = new PacketBatch(64, readSlotSize(dev));
      const reading = collect(dev, rx, payloads.length, (p) => {
        const ip = ipInfo(p);
        return ip !== null && ip.v6 === (family === 6) && ip.proto === 17 &&
          new DataView(p.buffer, p.byteOffset).getUint16(ip.hl + 2) === port;
      });
      await h.sendUdp(family, port, payloads);
      const got = await reading;
      got.forEach((p, i) => {
        assertEquals(p.length, hl + 8 + payloads[i].length, `datagram ${i} length`);
        assertEquals(p.subarray(hl + 8), payloads[i], `datagram ${i} payload`);
        const dst = family === 4 ? p.subarray(16, 20) : p.subarray(24, 40);
        assertEquals(dst, a.local, "addressed to the device's address");
      });
    });
  }

  test("oversize packets are rejected and nothing of the batch is written", async (h) => {
    const dev = h.device;
    const id = 0x5d00;
    const tx = new PacketBatch(3, Math.min(dev.mtu + 1, 65535));
    tx.push(echoRequest(h.v4.local, h.v4.peer, id, 1, 60));
    if (dev.mtu < 65535) {
      tx.push(echoRequest(h.v4.local, h.v4.peer, id, 2, dev.mtu + 1));
      await expectTunError(() => dev.writeBatch(tx), "oversize");
    }
    // Only the next request is answered: the rejected batch left nothing behind.
    tx.clear();
    tx.push(echoRequest(h.v4.local, h.v4.peer, id, 3, 60));
    assertEquals(dev.writeBatch(tx), 1);
    const got = await collect(dev, new PacketBatch(8, readSlotSize(dev)), 1, (p) => {
      return echoReplySeq(p, id) !== null;
    });
    assertEquals(echoReplySeq(got[0], id), 3);
  });

  test("malformed packets and unsupported offload metadata are rejected", async (h) => {
    const dev = h.device;
    const b = new PacketBatch(2, dev.mtu);
    b.push(new Uint8Array(0));
    await expectTunError(() => dev.writeBatch(b), "malformed");
    b.clear();
    const bad = echoRequest(h.v4.local, h.v4.peer, 1, 1, 40);
    bad[0] = 0x55;
    b.push(bad);
    await expectTunError(() => dev.writeBatch(b), "malformed");
    if (!dev.offload.tso) {
      b.clear();
      b.push(echoRequest(h.v4.local, h.v4.peer, 1, 1, 40));
      b.gsoKind[0] = GSO_TCP4;
      b.gsoSize[0] = 1000;
      await expectTunError(() => dev.writeBatch(b), "offload");
    }
    // A bad range is a programming error, not a TunError.
    let threw = false;
    try {
      dev.writeBatch(b, 0, 5);
    } catch (e) {
      threw = e instanceof RangeError;
    }
    assert(threw, "range beyond count throws RangeError");
  });

  test("a second concurrent read is refused; slots below the MTU are refused", async (h) => {
    const dev = h.device;
    const rb = new PacketBatch(4, readSlotSize(dev));
    let first: Promise<number>;
    let settled = false;
    do {
      settled = false;
      first = dev.readBatch(rb);
      first.then(() => settled = true, () => settled = true);
      await new Promise((r) => setTimeout(r, 20));
    } while (settled);
    await expectTunError(() => dev.readBatch(new PacketBatch(4, readSlotSize(dev))), "busy");
    dev.close();
    assertEquals(await first, 0);
    const h2 = await make();
    try {
      if (readSlotSize(h2.device) > 20) {
        await expectTunError(() => h2.device.readBatch(new PacketBatch(1, 20)), "slot");
      }
    } finally {
      h2.device.close();
      await h2.close();
    }
  });

  test("close with a read pending resolves it with 0; later use fails cleanly", async (h) => {
    const dev = h.device;
    const rb = new PacketBatch(4, readSlotSize(dev));
    // A peer's own packets (a kernel's router solicitation) may end a read
    // early: read again until one is really pending.
    let settled = false;
    let pending: Promise<number>;
    do {
      settled = false;
      pending = dev.readBatch(rb);
      pending.then(() => settled = true, () => settled = true);
      await new Promise((r) => setTimeout(r, 20));
    } while (settled);
    assert(!dev.closed, "not closed yet");
    dev.close();
    assert(dev.closed, "closed after close()");
    const n = await Promise.race([
      pending,
      new Promise<string>((r) => setTimeout(() => r("still pending"), 3000)),
    ]);
    assertEquals(n, 0, "pending read resolves 0");
    assertEquals(await dev.readBatch(new PacketBatch(4, readSlotSize(dev))), 0, "read after close");
    const b = new PacketBatch(1, dev.mtu);
    b.push(echoRequest(h.v4.local, h.v4.peer, 1, 1, 40));
    await expectTunError(() => dev.writeBatch(b), "closed");
    dev.close(); // idempotent
  });
}
