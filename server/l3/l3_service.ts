/**
 * The server's layer-3 hub (issue 12, docs/l3.md): one TUN device with the
 * server's own address, the address pool and the hub's forwarding decision.
 *
 * A session asks for layer 3 by opening a stream to the reserved control
 * target; the server's per-session dialer hands that stream to
 * {@link L3Service.openControl} (a Duplex, like any dialed upstream), which
 * reads the request, leases the addresses and answers. From then on the
 * session's DATAGRAM frames of kind 2 are IP packets: another client's
 * address goes session to session, anything else into the TUN (the server's
 * kernel, NAT when configured); what the TUN gives goes to the session that
 * holds its destination. SYN MSS is clamped both ways. The lease ends with the
 * control stream (either side) or the session.
 * @module
 */

import type { Duplex } from "../../shared/duplex.ts";
import {
  BufferedReader,
  closeQuietly,
  duplexPair,
  encodeLatin1,
  writeAll,
} from "../../shared/pipe.ts";
import type { AddressPool } from "../../shared/l3/address_pool.ts";
import type { L3Hub } from "../../shared/l3/hub.ts";
import { clampMss, mssFor } from "../../shared/l3/mss_clamp.ts";
import { encodeL3Response, L3_LINE_MAX, parseL3Request } from "../../shared/l3/control.ts";
import { DatagramKind } from "../../shared/session/datagram_demux.ts";
import { PacketBatch, type TunDevice } from "../../shared/tun/device.ts";

/** What the service needs of one session. */
export interface L3SessionPort {
  /** The session's id (the hub's key). */
  readonly id: number;
  /** The key or user the session authenticated as (leases stick to it). */
  readonly owner: string;
  /** The user's fixed address, if its record has one. */
  readonly fixed?: string;
  /** Sends one DATAGRAM payload (kind byte included); false when it did not fit or was dropped. */
  sendDatagram(payload: Uint8Array): boolean;
  /** Logs a refusal or an event for this session (once each). */
  log(message: string): void;
}

/** Settings of the hub. */
export interface L3ServiceOptions {
  /** The server's TUN (up, with the server's addresses). */
  device: TunDevice;
  pool: AddressPool;
  hub: L3Hub;
  /** Largest IP packet carried (the clients' TUN MTU). */
  mtu: number;
  /** Prefixes the clients route into their TUN. */
  routes: string[];
}

/** Counters of the hub service. */
export interface L3ServiceStats {
  /** Leases granted, refused. */
  granted: number;
  refused: number;
  /** Packets a session sent that did not fit its datagram room (dropped). */
  tooBig: number;
  /** SYNs whose MSS was lowered. */
  clamped: number;
}

interface Member {
  port: L3SessionPort;
  control: Duplex;
}

/** See the module doc. */
export class L3Service {
  /** Counters. */
  readonly stats: L3ServiceStats = { granted: 0, refused: 0, tooBig: 0, clamped: 0 };
  readonly #o: L3ServiceOptions;
  readonly #members = new Map<number, Member>();
  readonly #tx = new PacketBatch(1, 65535);
  readonly #mss4: number;
  readonly #mss6: number;
  #closed = false;

  constructor(opts: L3ServiceOptions) {
    this.#o = opts;
    this.#mss4 = mssFor(opts.mtu, 4);
    this.#mss6 = mssFor(opts.mtu, 6);
  }

  /** Live layer-3 sessions. */
  get members(): number {
    return this.#members.size;
  }

  /**
   * The upstream of a control stream of `port`'s session: the relay writes
   * the client's request into it and its answers back; never throws.
   */
  openControl(port: L3SessionPort): Duplex {
    const [outside, inside] = duplexPair();
    void this.#serveControl(port, inside);
    return outside;
  }

  async #serveControl(port: L3SessionPort, control: Duplex): Promise<void> {
    const reader = new BufferedReader(control);
    let member: Member | null = null;
    try {
      const text = await reader.readLine(L3_LINE_MAX);
      if (text === null) return;
      const req = parseL3Request(encodeLatin1(text));
      if (typeof req === "string") {
        await writeAll(control, encodeL3Response({ ok: false, reason: `bad request: ${req}` }));
        return;
      }
      const r = this.#o.pool.lease({
        session: port.id,
        owner: port.owner,
        instance: req.instance,
        ...(port.fixed !== undefined ? { fixed: port.fixed } : {}),
      });
      if (!r.ok) {
        this.stats.refused++;
        port.log(`layer 3 refused: ${r.reason}`);
        await writeAll(control, encodeL3Response({ ok: false, reason: r.reason }));
        return;
      }
      if (r.replaced !== undefined) this.#end(r.replaced);
      member = { port, control };
      this.#members.set(port.id, member);
      const want6 = req.ipv6 && r.lease.v6 !== undefined;
      this.#o.hub.attach(port.id, { v4: r.lease.v4, ...(want6 ? { v6: r.lease.v6 } : {}) });
      this.stats.granted++;
      const server = this.#o.pool.server;
      await writeAll(
        control,
        encodeL3Response({
          ok: true,
          address: `${r.lease.v4}/${r.lease.prefix}`,
          ...(want6 ? { address6: `${r.lease.v6}/${r.lease.prefix6}`, server6: server.v6 } : {}),
          server: server.v4,
          mtu: this.#o.mtu,
          routes: this.#o.routes.filter((x) => want6 || !x.includes(":")),
        }),
      );
      // The lease lasts as long as the control stream: wait for its end.
      const sink = new Uint8Array(256);
      while ((await control.read(sink)) !== null) { /* nothing else is said on it */ }
    } catch {
      // The stream broke (the session ended): the lease ends below.
    } finally {
      if (member && this.#members.get(port.id) === member) this.#end(port.id);
      closeQuietly(control);
    }
  }

  /** Ends the layer-3 role of session `id` (its lease and hub entry). */
  #end(id: number): void {
    const m = this.#members.get(id);
    this.#members.delete(id);
    this.#o.hub.detach(id);
    this.#o.pool.release(id);
    if (m) closeQuietly(m.control);
  }

  /** The session ended: its lease goes too. */
  sessionClosed(id: number): void {
    if (this.#members.has(id)) this.#end(id);
  }

  /** A DATAGRAM payload of kind 2 from session `id` (kind byte included). */
  onDatagram(id: number, payload: Uint8Array): void {
    if (payload.length < 2 || !this.#members.has(id)) return;
    const packet = payload.subarray(1);
    const d = this.#o.hub.fromSession(id, packet);
    if (d.to === "drop") return;
    this.#clamp(packet);
    if (d.to === "session") this.#toSession(d.session, packet);
    else this.#toTun(packet);
  }

  #clamp(packet: Uint8Array): void {
    if (clampMss(packet, packet[0] >> 4 === 6 ? this.#mss6 : this.#mss4) !== 0) {
      this.stats.clamped++;
    }
  }

  #toSession(id: number, packet: Uint8Array): void {
    const m = this.#members.get(id);
    if (!m) return;
    if (packet.length > this.#o.mtu) {
      this.stats.tooBig++;
      return;
    }
    // The session queues the datagram as given (it is sent later): one copy per packet.
    const d = new Uint8Array(1 + packet.length);
    d[0] = DatagramKind.l3;
    d.set(packet, 1);
    if (!m.port.sendDatagram(d)) this.stats.tooBig++;
  }

  #toTun(packet: Uint8Array): void {
    const b = this.#tx;
    b.slots[0].set(packet);
    b.lengths[0] = packet.length;
    b.count = 1;
    try {
      this.#o.device.writeBatch(b, 0, 1);
    } catch {
      // A full or closed device drops the packet, as a link would.
    }
  }

  /** Reads the TUN until it closes, handing each packet to its session. */
  async run(): Promise<void> {
    const rx = new PacketBatch(64, Math.min(65535, Math.max(this.#o.mtu, 1500)));
    while (!this.#closed) {
      let n: number;
      try {
        n = await this.#o.device.readBatch(rx);
      } catch {
        break;
      }
      if (n === 0) break; // closed
      for (let i = 0; i < n; i++) {
        const p = rx.slots[i].subarray(0, rx.lengths[i]);
        const d = this.#o.hub.fromTun(p);
        if (d.to !== "session") continue;
        this.#clamp(p);
        this.#toSession(d.session, p);
      }
    }
  }

  /** Ends every lease and stops reading (the device is the caller's to close). */
  close(): void {
    this.#closed = true;
    for (const id of [...this.#members.keys()]) this.#end(id);
  }
}
