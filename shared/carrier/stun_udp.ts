/**
 * Plain UDP with the socket's public mapping watched (docs/nat.md): each link
 * the {@link StunUdpDialer} opens — at a handshake and at every socket hop —
 * asks a STUN server for its reflexive address on the session's own socket,
 * at once and then every `intervalMs`, so the NAT sees one flow and the
 * client learns what the ostp server sees. A mapping that changes on the
 * same socket is a NAT rebinding and is reported as such.
 *
 * The link's socket stays the session's: the monitor only gets datagrams
 * from other sources than the ostp server ({@link UdpLink.tap}), and takes
 * one only when it answers a Binding request in flight, from the server it
 * went to; a forged answer from anywhere else changes nothing.
 * @module
 */

import { BindingClient } from "../stun/binding.ts";
import { formatNetAddr } from "../net/ip.ts";
import type { RetransmitConfig } from "../stun/transactions.ts";
import type { CarrierDialer, CarrierLink } from "./carrier.ts";
import type { UdpDialer, UdpLink } from "./udp.ts";

/** One mapping seen on one link's socket. */
export interface MappingObservation {
  /** The socket's local port. */
  localPort: number;
  /** The STUN server that answered. */
  server: Deno.NetAddr;
  /** The reflexive (public) address. */
  mapped: Deno.NetAddr;
  /** The mapping this socket had before, null for the first. */
  previous: Deno.NetAddr | null;
  /** First answer on this socket, the same again, or a NAT rebinding. */
  change: "first" | "same" | "rebinding";
  /** Round trip, ms. */
  rttMs: number;
}

/** Settings of {@link StunUdpDialer}. */
export interface StunMonitorOptions {
  /** The STUN servers, resolved (asked in order; the next when one does not answer). */
  servers: () => Promise<Deno.NetAddr[]>;
  /** Between two checks on one socket, ms; 0: only when the socket opens. */
  intervalMs: number;
  /** Every answer. */
  onObservation: (o: MappingObservation) => void;
  /** A check no server answered. */
  onNoAnswer?: (localPort: number, servers: Deno.NetAddr[]) => void;
  /** Retransmission settings (tests). */
  retransmit?: RetransmitConfig;
}

/** UDP links whose mapping is watched. */
export class StunUdpDialer implements CarrierDialer {
  readonly kind = "udp";
  /** The latest mapping of each open link, by local port. */
  readonly mappings = new Map<number, MappingObservation>();
  /** Forged or stray STUN datagrams dropped, over all links. */
  dropped = 0;

  constructor(private readonly inner: UdpDialer, private readonly opts: StunMonitorOptions) {}

  openNow(server: Deno.NetAddr): UdpLink {
    const link = this.inner.openNow(server);
    new MappingMonitor(link, this, this.opts).start();
    return link;
  }

  dial(server: Deno.NetAddr): Promise<CarrierLink> {
    try {
      return Promise.resolve(this.openNow(server));
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

/** Watches one link's mapping until the link closes. */
class MappingMonitor {
  private readonly binding: BindingClient;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private servers: Deno.NetAddr[] = [];
  /** Index of the server asked now. */
  private current = 0;
  /** Servers tried in this round without an answer. */
  private triedThisRound = 0;
  private last: Deno.NetAddr | null = null;
  private readonly port: number;

  constructor(
    private readonly link: UdpLink,
    private readonly owner: StunUdpDialer,
    private readonly opts: StunMonitorOptions,
  ) {
    this.binding = new BindingClient(opts.retransmit);
    this.port = link.localPort;
    link.tap = (data, from) => this.onDatagram(data, from);
    link.statsSource = (): Record<string, string> => {
      const l = this.last;
      if (!l) return {};
      return { mapped: formatNetAddr(l) };
    };
    link.onClose(() => this.stop());
  }

  start(): void {
    this.opts.servers().then((s) => {
      if (this.stopped || s.length === 0) return;
      this.servers = s;
      this.round();
    }, () => {});
  }

  private stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.owner.mappings.delete(this.port);
  }

  /** Asks the current server. */
  private round(): void {
    if (this.stopped) return;
    const server = this.servers[this.current % this.servers.length];
    const bytes = this.binding.request(server, performance.now());
    this.link.socket.send(bytes, server);
    this.link.socket.flush();
    this.schedule();
  }

  private schedule(): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    const at = this.binding.nextDeadline();
    if (at === Infinity) return;
    this.timer = setTimeout(() => this.poll(), Math.max(0, at - performance.now()));
  }

  private poll(): void {
    if (this.stopped) return;
    const { resend, expired } = this.binding.poll(performance.now());
    for (const r of resend) this.link.socket.send(r.bytes, r.to);
    if (resend.length > 0) this.link.socket.flush();
    if (expired.length > 0) {
      // This server did not answer: the next one, until each had its turn this round.
      this.current++;
      this.triedThisRound++;
      if (this.triedThisRound < this.servers.length) {
        this.round();
        return;
      }
      this.triedThisRound = 0;
      this.opts.onNoAnswer?.(this.port, this.servers);
      this.next();
      return;
    }
    this.schedule();
  }

  /** The next round after the interval (none when 0). */
  private next(): void {
    clearTimeout(this.timer);
    if (this.stopped || this.opts.intervalMs <= 0) return;
    this.timer = setTimeout(() => this.round(), this.opts.intervalMs);
  }

  private onDatagram(data: Uint8Array, from: Deno.NetAddr): void {
    const r = this.binding.receive(data, from, performance.now());
    if (!r) {
      this.owner.dropped++;
      return;
    }
    this.triedThisRound = 0;
    if ("error" in r) {
      this.current++;
      this.next();
      return;
    }
    const previous = this.last;
    const same = previous !== null && previous.hostname === r.mapped.hostname &&
      previous.port === r.mapped.port;
    this.last = r.mapped;
    const o: MappingObservation = {
      localPort: this.port,
      server: r.server,
      mapped: r.mapped,
      previous,
      change: previous === null ? "first" : same ? "same" : "rebinding",
      rttMs: r.rttMs,
    };
    this.owner.mappings.set(this.port, o);
    this.opts.onObservation(o);
    this.next();
  }
}
