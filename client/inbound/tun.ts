/**
 * The TUN inbound: raw IP packets from a {@link TunDevice} go through the
 * userspace stack (`shared/netstack/stack.ts`), which turns them back into
 * TCP connections and UDP flows; each goes to the router like any other
 * inbound's, and the answers go back into the device.
 *
 * - TCP: the application's SYN becomes a dial of the outbound; only when it
 *   connected is the SYN answered (`accept`); a refusal becomes a RST, an
 *   unreachable target an ICMP unreachable — never a half-open connection.
 *   Bytes then flow both ways with backpressure: the stack's receive window
 *   closes while the outbound has not taken what was read, and the outbound
 *   is not read while the stack's send window is full.
 * - UDP: one router association per application source address (full cone),
 *   each datagram routed by its own destination; DNS to the TUN's DNS
 *   address (or, with hijack, to any address on port 53) goes to the
 *   {@link DnsRelay}, which answers through the tunnel and remembers names.
 * - Names: a connection to an address a DNS answer gave is routed by that
 *   name (`FlowContext.domain`: domain rules, `exclude.domains`); it still
 *   goes to the address the application chose (resolved through the tunnel
 *   already), so no second resolution can disagree with the first.
 *
 * One read loop, one timer; packets out are written in batches.
 * @module
 */

import { DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import { getLog } from "../../shared/log.ts";
import { formatIp, ipBytes } from "../../shared/net/cidr.ts";
import {
  ReadResult,
  Stack,
  type StackEvent,
  type StackOptions,
} from "../../shared/netstack/stack.ts";
import { PacketBatch, readSlotSize, type TunDevice } from "../../shared/tun/device.ts";
import type { DnsRelay } from "../dns/dns_relay.ts";
import type { NameMap } from "../dns/name_map.ts";
import type { FlowContext, Outbound, UdpFlow } from "../outbound/outbound.ts";
import { sniff, SNIFF_LIMIT } from "../router/sniff.ts";

const log = getLog("client.tun");

/** Settings of a {@link TunInbound}. */
export interface TunInboundOptions {
  /** The device packets come from and go to. */
  device: TunDevice;
  /** Where flows go (the router). */
  outbound: Outbound;
  /** Address → name, filled by the DNS relay. */
  names: NameMap;
  /** Answers captured DNS queries; null: DNS is routed like any UDP. */
  dns: DnsRelay | null;
  /** The TUN's DNS addresses (4 or 16 bytes each): queries to them go to {@link dns}. */
  dnsAddresses: readonly Uint8Array[];
  /** Send queries to any address on port 53 to {@link dns} too. */
  hijackDns: boolean;
  /** Stack settings (the MTU defaults to the device's). */
  stack?: StackOptions;
  /**
   * Whether a TCP flow to an address with no known name should be sniffed
   * (TLS server name, HTTP Host) before it is routed — true when domain rules
   * exist. Such a flow is answered before its outbound is dialed (the first
   * bytes are needed), so a failed dial resets it instead. Default: never.
   */
  sniffWhen?: (ctx: FlowContext) => boolean;
  /** Longest wait for the first bytes of a sniffed flow, ms (default 300). */
  sniffTimeoutMs?: number;
  /**
   * The largest UDP payload the tunnel carries to an IPv4 (4) or IPv6 (6) address, or null
   * while unknown (the tunnel pool's `maxUdpPayload`). Looked at before each batch of packets:
   * a larger datagram from an application gets "fragmentation needed" / "packet too big" from
   * the stack (so its path MTU discovery adapts) instead of vanishing in the outbound. It
   * applies whatever the route (the tunnel is the narrowest path). Default: the stack's MTU
   * bound only.
   */
  udpMaxPayload?: (family: 4 | 6) => number | null;
  /** Monotonic ms (injectable for tests). */
  now?: () => number;
}

/** Counters of a TUN inbound. */
export interface TunInboundStats {
  tcpAccepted: number;
  tcpRefused: number;
  /** Flows whose name was read from their first bytes. */
  sniffed: number;
  udpFlows: number;
  dnsQueries: number;
}

const TCP_BUF = 32 * 1024;
/** Datagrams held per UDP mapping while its outbound flow opens. */
const UDP_PENDING_MAX = 32;

interface TcpGlue {
  flow: number;
  duplex: Duplex | null;
  /** A write to the outbound is in progress (stop reading the stack). */
  writing: boolean;
  /** The stack's read side ended (FIN passed on) or failed. */
  readDone: boolean;
  /** Wakes the outbound→stack pump when the stack has room again. */
  wakeWritable: (() => void) | null;
  closed: boolean;
  buf: Uint8Array;
  /** While the first bytes are read for a name: reads more of them. */
  sniffing: (() => void) | null;
  /** The application ended its side during sniffing. */
  sniffEnded: boolean;
}

interface UdpGlue {
  flow: number;
  src: Uint8Array;
  srcPort: number;
  out: UdpFlow | null;
  opening: boolean;
  failed: boolean;
  pending: { target: Target; data: Uint8Array }[];
}

function ipText(a: Uint8Array): string {
  if (a.length === 4) return `${a[0]}.${a[1]}.${a[2]}.${a[3]}`;
  return formatIp(a);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Aborts an outbound stream: one that can be reset (an OSTP stream) is reset, so the far end
 * stops at once. A plain `close` after our half-close would keep draining — and discarding —
 * whatever the target still sends, for as long as it sends. Anything else is closed.
 */
function abortDuplex(d: Duplex): void {
  const reset = (d as { reset?: unknown }).reset;
  if (typeof reset === "function") reset.call(d);
  else d.close();
}

/** Bytes of an address the stack can use as a UDP source of `family` (4 or 6), or null. */
function addressBytes(host: string, family: number): Uint8Array | null {
  const ip = ipBytes(host);
  return ip !== null && ip.length === (family === 4 ? 4 : 16) ? ip : null;
}

/** The TUN inbound (see the module doc). */
export class TunInbound {
  /** The stack (for statistics and tests). */
  readonly stack: Stack;
  /** Counters. */
  readonly stats: TunInboundStats = {
    tcpAccepted: 0,
    tcpRefused: 0,
    sniffed: 0,
    udpFlows: 0,
    dnsQueries: 0,
  };
  private readonly dev: TunDevice;
  private readonly now: () => number;
  private readonly tcp = new Map<number, TcpGlue>();
  private readonly udp = new Map<number, UdpGlue>();
  private readonly rx: PacketBatch;
  private readonly tx: PacketBatch;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt = Infinity;
  private pumpQueued = false;
  private closed = false;
  private loop: Promise<void> | null = null;

  constructor(private readonly opts: TunInboundOptions) {
    this.dev = opts.device;
    this.now = opts.now ?? (() => performance.now());
    this.stack = new Stack({ mtu: opts.device.mtu, ...opts.stack });
    this.rx = new PacketBatch(64, readSlotSize(opts.device));
    this.tx = new PacketBatch(64, Math.max(this.stack.mtu, 1280));
  }

  /** Runs until the device closes or {@link close} is called. */
  run(): Promise<void> {
    this.loop ??= this.readLoop();
    return this.loop;
  }

  /** Stops: every flow is aborted, the timer cleared; the device is the caller's to close. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    for (const g of this.tcp.values()) this.finishTcp(g, true);
    for (const u of this.udp.values()) u.out?.close();
    this.udp.clear();
  }

  private async readLoop(): Promise<void> {
    const rx = this.rx;
    while (!this.closed) {
      let n: number;
      try {
        n = await this.dev.readBatch(rx);
      } catch (e) {
        log.error("TUN read failed: {error}", { error: String(e) });
        break;
      }
      if (n === 0) break;
      this.updateUdpRoom();
      const now = this.now();
      for (let i = 0; i < n; i++) {
        this.stack.input(rx.slots[i].subarray(0, rx.lengths[i]), now);
      }
      this.pump();
    }
    this.close();
  }

  /** Tells the stack the tunnel's current UDP room ({@link TunInboundOptions.udpMaxPayload}). */
  private updateUdpRoom(): void {
    const room = this.opts.udpMaxPayload;
    if (!room) return;
    const v4 = room(4);
    const v6 = room(6);
    if (v4 === null || v6 === null) return;
    if (v4 !== this.stack.udpMaxPayload) this.stack.udpMaxPayload = v4;
    if (v6 !== this.stack.udpMaxPayload6) this.stack.udpMaxPayload6 = v6;
  }

  /** Runs the pump at the end of the current task (coalesces many stack calls). */
  private kick(): void {
    if (this.pumpQueued || this.closed) return;
    this.pumpQueued = true;
    queueMicrotask(this.pumpTask);
  }

  private readonly pumpTask = (): void => {
    this.pumpQueued = false;
    this.pump();
  };

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    this.pump();
  };

  /** Timers, events, then every packet the stack has for the device; re-arms the timer. */
  private pump(): void {
    if (this.closed) return;
    const s = this.stack;
    let now = this.now();
    if (s.nextDeadline() <= now) s.handleTimeout(now);
    let ev: StackEvent | undefined;
    while ((ev = s.pollEvent())) this.onEvent(ev, now);
    now = this.now();
    const tx = this.tx;
    tx.clear();
    for (;;) {
      const i = tx.count;
      const len = s.poll(now, tx.slots[i]);
      if (len === 0) break;
      tx.lengths[i] = len;
      tx.flags[i] = 0;
      tx.gsoKind[i] = 0;
      tx.count = i + 1;
      if (tx.count === tx.capacity) this.flushTx();
    }
    this.flushTx();
    const next = s.nextDeadline();
    if (next === Infinity) return;
    if (this.timer === undefined || next < this.timerAt - 0.5) {
      clearTimeout(this.timer);
      this.timerAt = next;
      this.timer = setTimeout(this.onTimer, Math.max(0, next - now));
    }
  }

  private flushTx(): void {
    const tx = this.tx;
    if (tx.count === 0) return;
    try {
      this.dev.writeBatch(tx, 0, tx.count);
    } catch (e) {
      log.debug("TUN write failed: {error}", { error: String(e) });
    }
    tx.clear();
  }

  private onEvent(ev: StackEvent, now: number): void {
    switch (ev.type) {
      case "tcp-syn":
        this.onSyn(ev.flow, ev.src, ev.srcPort, ev.dst, ev.dstPort);
        break;
      case "readable": {
        const g = this.tcp.get(ev.flow);
        if (g?.sniffing) g.sniffing();
        else if (g) this.drainStack(g);
        break;
      }
      case "writable": {
        const g = this.tcp.get(ev.flow);
        const w = g?.wakeWritable;
        if (g && w) {
          g.wakeWritable = null;
          w();
        }
        break;
      }
      case "closed": {
        const g = this.tcp.get(ev.flow);
        if (g) {
          g.closed = true;
          // Only a connection that ended cleanly ends its outbound cleanly.
          this.finishTcp(g, ev.reason !== "done");
        }
        break;
      }
      case "udp-open":
        this.udp.set(ev.flow, {
          flow: ev.flow,
          src: ev.src,
          srcPort: ev.srcPort,
          out: null,
          opening: false,
          failed: false,
          pending: [],
        });
        this.stats.udpFlows++;
        break;
      case "udp":
        this.onUdp(ev.flow, ev.dst, ev.dstPort, ev.payload, now);
        break;
      case "udp-closed": {
        const u = this.udp.get(ev.flow);
        if (u) {
          u.out?.close();
          this.udp.delete(ev.flow);
        }
        break;
      }
    }
  }

  // ------------------------------------------------------------------ TCP

  private onSyn(flow: number, src: Uint8Array, srcPort: number, dst: Uint8Array, port: number) {
    const name = this.opts.names.lookup(dst, this.now());
    const ctx: FlowContext = {
      inbound: "tun",
      network: "tcp",
      target: { host: ipText(dst), port },
      ip: dst,
      source: { host: ipText(src), port: srcPort },
    };
    if (name !== undefined) ctx.domain = name;
    const g: TcpGlue = {
      flow,
      duplex: null,
      writing: false,
      readDone: false,
      wakeWritable: null,
      closed: false,
      buf: new Uint8Array(TCP_BUF),
      sniffing: null,
      sniffEnded: false,
    };
    this.tcp.set(flow, g);
    if (name === undefined && this.opts.sniffWhen?.(ctx)) {
      this.sniffThenDial(g, ctx);
      return;
    }
    this.opts.outbound.dial(ctx).then((duplex) => {
      if (this.closed || g.closed) {
        duplex.close();
        return;
      }
      g.duplex = duplex;
      if (!this.stack.accept(flow, this.now())) {
        duplex.close();
        this.tcp.delete(flow);
        return;
      }
      this.stats.tcpAccepted++;
      void this.pumpOutbound(g, duplex);
      this.kick();
    }, (e) => {
      this.stats.tcpRefused++;
      this.tcp.delete(flow);
      if (this.closed) return;
      const reason = e instanceof DialError ? e.reason : "general";
      if (reason === "refused" || reason === "denied") this.stack.refuse(flow, "reset");
      else this.stack.refuse(flow, "unreachable", reason === "unreachable" ? "host" : "port");
      log.debug("tun {target}: {reason}", {
        target: `${ctx.target.host}:${port}`,
        reason: String(e),
      });
      this.kick();
    });
  }

  /**
   * Accepts first, reads the flow's first bytes (until they name a host, say
   * they never will, or the wait ends), then dials with that name; the bytes
   * read go to the outbound first. A failed dial resets the flow.
   */
  private sniffThenDial(g: TcpGlue, ctx: FlowContext): void {
    if (!this.stack.accept(g.flow, this.now())) {
      this.tcp.delete(g.flow);
      return;
    }
    this.stats.tcpAccepted++;
    this.kick();
    const head = new Uint8Array(SNIFF_LIMIT);
    let have = 0;
    let done = false;
    const deadline = setTimeout(() => finish(), this.opts.sniffTimeoutMs ?? 300);
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      g.sniffing = null;
      const r = sniff(head.subarray(0, have));
      if (typeof r === "object") {
        ctx.domain = r.name;
        this.stats.sniffed++;
      }
      this.opts.outbound.dial(ctx).then(async (duplex) => {
        if (this.closed || g.closed) {
          duplex.close();
          return;
        }
        g.duplex = duplex;
        try {
          if (have > 0) await this.writeAll(duplex, head.subarray(0, have));
        } catch {
          return this.abortTcp(g);
        }
        void this.pumpOutbound(g, duplex);
        if (g.sniffEnded) {
          g.readDone = true;
          duplex.closeWrite().catch(() => {});
        } else this.drainStack(g);
        this.kick();
      }, () => {
        this.stats.tcpRefused++;
        this.abortTcp(g);
      });
    };
    g.sniffing = () => {
      for (;;) {
        const n = this.stack.read(g.flow, head.subarray(have));
        if (n > 0) {
          have += n;
          if (have === head.length || sniff(head.subarray(0, have)) !== "more") return finish();
          continue;
        }
        if (n === ReadResult.END) {
          g.sniffEnded = true;
          return finish();
        }
        if (n === ReadResult.RESET) {
          done = true;
          clearTimeout(deadline);
          return this.abortTcp(g);
        }
        return; // would block: wait for more
      }
    };
  }

  /** Stack → outbound: read what the application sent, hand it on, repeat until it would block. */
  private drainStack(g: TcpGlue): void {
    if (g.writing || g.readDone || !g.duplex) return;
    const duplex = g.duplex;
    const n = this.stack.read(g.flow, g.buf);
    if (n > 0) {
      g.writing = true;
      void this.writeAll(duplex, g.buf.subarray(0, n)).then(() => {
        g.writing = false;
        if (!g.closed) {
          this.drainStack(g);
          this.kick(); // the window reopened: tell the application
        }
      }, () => {
        g.writing = false;
        this.abortTcp(g);
      });
      return;
    }
    if (n === ReadResult.END) {
      g.readDone = true;
      duplex.closeWrite().catch(() => {});
    } else if (n === ReadResult.RESET) {
      g.readDone = true;
      this.abortTcp(g);
    }
  }

  private async writeAll(d: Duplex, p: Uint8Array): Promise<void> {
    for (let off = 0; off < p.length;) off += await d.write(p.subarray(off));
  }

  /** Outbound → stack: read the outbound, write into the stack as its send window allows. */
  private async pumpOutbound(g: TcpGlue, duplex: Duplex): Promise<void> {
    const buf = new Uint8Array(TCP_BUF);
    try {
      for (;;) {
        const n = await duplex.read(buf);
        if (g.closed) return;
        if (n === null) {
          this.stack.close(g.flow); // FIN after what was written
          this.kick();
          return;
        }
        let off = 0;
        while (off < n) {
          const w = this.stack.write(g.flow, buf.subarray(off, n));
          if (w < 0 || g.closed) return this.abortTcp(g);
          off += w;
          this.kick();
          if (off < n) await new Promise<void>((r) => (g.wakeWritable = r));
          if (g.closed) return;
        }
      }
    } catch {
      this.abortTcp(g);
    }
  }

  private abortTcp(g: TcpGlue): void {
    if (!g.closed) this.stack.abort(g.flow);
    this.finishTcp(g, true);
    this.kick();
  }

  /**
   * Forgets a flow and releases its outbound: closed when the application's connection ended
   * cleanly, aborted (`abort`) when it was reset, timed out or failed, or the inbound stops.
   */
  private finishTcp(g: TcpGlue, abort: boolean): void {
    g.closed = true;
    this.tcp.delete(g.flow);
    if (g.duplex) {
      if (abort) abortDuplex(g.duplex);
      else g.duplex.close();
    }
    g.duplex = null;
    const w = g.wakeWritable;
    g.wakeWritable = null;
    if (w) w();
  }

  // ------------------------------------------------------------------ UDP

  private isDns(dst: Uint8Array, port: number): boolean {
    if (port !== 53 || !this.opts.dns) return false;
    if (this.opts.hijackDns) return true;
    return this.opts.dnsAddresses.some((a) => sameBytes(a, dst));
  }

  private onUdp(flow: number, dst: Uint8Array, port: number, payload: Uint8Array, now: number) {
    const u = this.udp.get(flow);
    if (!u) return;
    if (this.isDns(dst, port)) {
      this.stats.dnsQueries++;
      const from = dst.slice();
      void this.opts.dns!.resolve(payload.slice()).then((answer) => {
        if (!answer || this.closed) return;
        this.stack.sendUdp(flow, from, 53, answer, this.now());
        this.kick();
      });
      return;
    }
    const target = { host: ipText(dst), port };
    if (u.out) {
      u.out.send(target, payload);
      return;
    }
    if (u.failed) return;
    if (u.pending.length < UDP_PENDING_MAX) u.pending.push({ target, data: payload.slice() });
    if (u.opening) return;
    u.opening = true;
    const ctx: FlowContext = {
      inbound: "tun",
      network: "udp",
      target,
      ip: dst,
      source: { host: ipText(u.src), port: u.srcPort },
    };
    const name = this.opts.names.lookup(dst, now);
    if (name !== undefined) ctx.domain = name;
    const family = u.src.length === 4 ? 4 : 6;
    this.opts.outbound.openUdp(ctx, (from, data) => {
      if (this.closed) return;
      const src = addressBytes(from.host, family);
      if (!src) return; // a reply from a name or the other family cannot be put back
      this.stack.sendUdp(flow, src, from.port, data, this.now());
      this.kick();
    }).then((out) => {
      u.opening = false;
      if (this.closed || !this.udp.has(flow)) {
        out.close();
        return;
      }
      u.out = out;
      for (const p of u.pending) out.send(p.target, p.data);
      u.pending = [];
    }, (e) => {
      u.opening = false;
      u.failed = true;
      u.pending = [];
      log.debug("tun udp {target}: {error}", {
        target: `${target.host}:${port}`,
        error: String(e),
      });
    });
  }
}
