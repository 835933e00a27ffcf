/**
 * Fuzz of the stack's front door: random bytes and mutated packets (the recorded kernel
 * captures, plus segments of live connections with their checksums fixed up so mutations
 * reach the TCP state machine) into `input`, with connections open and an embedder that
 * accepts, reads, writes, closes and aborts. Only returns or typed results, never a throw;
 * connections, buffers and queues stay within their bounds. Seeded, fast.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { readFixture } from "../support/pcap.ts";
import { pattern, prng, SimLink, TcpPeer } from "../support/tcp_peer.ts";
import { Stack, type StackEvent } from "../../shared/netstack/stack.ts";
import { parseIp } from "../../shared/netstack/wire/packet.ts";
import { finishChecksum, onesSum, pseudoHeaderSum } from "../../shared/netstack/wire/checksum.ts";
import { rewriteIpv4Checksum } from "../../shared/netstack/wire/ipv4.ts";

const APP = new Uint8Array([10, 0, 0, 2]);
const SRV = new Uint8Array([1, 2, 3, 4]);

/** Recomputes the transport checksum (TCP/UDP/ICMPv6) and the IPv4 header checksum. */
function fixChecksums(pkt: Uint8Array): void {
  const ip = parseIp(pkt, undefined, { skipChecksum: true });
  if (typeof ip === "string" || ip.isFragment) return;
  if (ip.version === 4) rewriteIpv4Checksum(pkt, 0);
  const t = ip.payload;
  const off = ip.protocol === 6 ? 16 : ip.protocol === 17 ? 6 : ip.protocol === 58 ? 2 : -1;
  if (off < 0 || t.length < off + 2) return;
  t[off] = 0;
  t[off + 1] = 0;
  const c = finishChecksum(
    onesSum(t, 0, t.length, pseudoHeaderSum(ip.src, ip.dst, ip.protocol, t.length)),
  );
  t[off] = c >> 8;
  t[off + 1] = c & 0xff;
}

Deno.test("fuzz: random and mutated packets, live connections, bounded memory", () => {
  const rand = prng(20261202);
  const maxConnections = 32;
  const recvBuffer = 16 * 1024;
  const sendBuffer = 16 * 1024;
  const stack = new Stack({
    mtu: 1500,
    maxConnections,
    maxSynQueue: 8,
    maxTimeWait: 8,
    udpMaxFlows: 16,
    maxQueuedEvents: 256,
    tcp: { recvBuffer, sendBuffer, timeWait: 500 },
    random: prng(5),
  });
  const flows: number[] = [];
  const buf = new Uint8Array(8192);
  const reply = pattern(100_000, 3);
  const onEvent = (ev: StackEvent, link: SimLink) => {
    if (ev.type === "tcp-syn") {
      const r = rand();
      if (r < 0.7) stack.accept(ev.flow, link.now);
      else if (r < 0.8) stack.refuse(ev.flow, "reset");
      else if (r < 0.9) stack.refuse(ev.flow, "unreachable");
      flows.push(ev.flow);
    } else if (ev.type === "readable") {
      if (rand() < 0.9) { while (stack.read(ev.flow, buf) > 0); }
    } else if (ev.type === "writable") {
      stack.write(ev.flow, reply.subarray(0, 8000));
    }
  };
  const link = new SimLink(stack, onEvent, undefined, undefined, 9);
  link.recordStack = true;
  // Live connections first (their segments seed the mutations).
  const corpus: Uint8Array[] = [];
  for (const name of ["tcp4.pcap", "tcp6.pcap", "udp_icmp.pcap", "frag.pcap"]) {
    for (const p of readFixture(name)) if (p.ip) corpus.push(p.ip.slice());
  }
  const peers: TcpPeer[] = [];
  for (let i = 0; i < 12; i++) {
    const p = link.add(new TcpPeer({ src: APP, srcPort: 50000 + i, dst: SRV, dstPort: 80 }));
    p.connect();
    p.write(pattern(20_000, i));
    peers.push(p);
  }
  const origFilter = (pkt: Uint8Array, toStack: boolean) => {
    if (toStack && corpus.length < 4000) corpus.push(pkt.slice());
    return true;
  };
  link.filter = origFilter;
  link.run(() => false, 2000);
  for (const f of flows) stack.write(f, reply.subarray(0, 30_000));
  link.run(() => false, 4000);
  corpus.push(...link.fromStack.slice(0, 500));
  const started = performance.now();
  let now = link.now;
  const counts = new Map<string, number>();
  const N = 150_000;
  for (let i = 0; i < N; i++) {
    const r = rand();
    let pkt: Uint8Array;
    if (r < 0.1) {
      pkt = new Uint8Array(Math.floor(rand() * 120));
      for (let j = 0; j < pkt.length; j++) pkt[j] = rand() * 256;
      if (pkt.length > 0 && rand() < 0.7) pkt[0] = rand() < 0.5 ? 0x45 : 0x60;
    } else {
      pkt = corpus[Math.floor(rand() * corpus.length)].slice();
      const muts = 1 + Math.floor(rand() * 4);
      for (let m = 0; m < muts; m++) {
        const k = rand();
        if (k < 0.6 && pkt.length > 0) {
          // Flip a byte past the addresses mostly (header fields, options, data).
          const j = Math.floor(rand() * pkt.length);
          pkt[j] = rand() * 256;
        } else if (k < 0.8) {
          pkt = pkt.subarray(0, Math.floor(rand() * pkt.length));
        } else {
          const ext = new Uint8Array(pkt.length + Math.floor(rand() * 64));
          ext.set(pkt);
          pkt = ext;
        }
      }
      if (rand() < 0.8) fixChecksums(pkt);
    }
    now += rand() * 5;
    const res = stack.input(pkt, now);
    counts.set(res, (counts.get(res) ?? 0) + 1);
    if (i % 7 === 0) {
      for (let n = stack.poll(now, buf); n > 0; n = stack.poll(now, buf)) {
        const back = parseIp(buf.slice(0, n));
        assert(typeof back !== "string", `stack emitted a bad packet: ${back}`);
      }
      for (let ev = stack.pollEvent(); ev; ev = stack.pollEvent()) onEvent(ev, link);
    }
    if (i % 101 === 0) {
      const f = flows[Math.floor(rand() * flows.length)];
      if (f !== undefined) {
        const a = rand();
        if (a < 0.3) stack.close(f);
        else if (a < 0.4) stack.abort(f);
        else stack.write(f, reply.subarray(0, Math.floor(rand() * 20_000)));
      }
    }
    if (stack.nextDeadline() <= now) stack.handleTimeout(now);
    if (i % 1000 === 0) {
      assert(
        stack.connectionCount <= maxConnections + 8 + 8,
        `connections ${stack.connectionCount}`,
      );
      assert(stack.allocatedBytes <= (maxConnections + 16) * (recvBuffer + sendBuffer));
      assert(stack.bufferedBytes <= (maxConnections + 16) * (recvBuffer + sendBuffer) + (2 << 20));
      assert(stack.udpFlowCount <= 16);
    }
  }
  // Everything drains: time passes, the stack ends up bounded and consistent.
  for (let t = 0; t < 400; t++) {
    now += 1000;
    stack.handleTimeout(now);
    while (stack.poll(now, buf) > 0);
    for (let ev = stack.pollEvent(); ev; ev = stack.pollEvent()) void ev;
  }
  const ms = performance.now() - started;
  console.log(`fuzz: ${N} packets in ${ms.toFixed(0)} ms`, Object.fromEntries(counts));
  assert(stack.connectionCount <= maxConnections + 16);
  assertEquals(stack.stats.internalErrors, 0, "no exception inside the stack");
  assert((counts.get("ok") ?? 0) > 1000, "mutations reached the protocol handlers");
});
