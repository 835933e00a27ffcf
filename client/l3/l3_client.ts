/**
 * The client's side of the layer-3 tunnel (issue 12, docs/l3.md): asks a
 * session for layer 3 over the control stream, brings the TUN up with what
 * the server assigned, and moves IP packets between the TUN and the session
 * as DATAGRAM frames of kind 2 — never a stream, so TCP inside never rides a
 * reliable channel (no TCP-over-TCP meltdown).
 *
 * When the session ends (roaming keeps it; a reconnection does not), the
 * client asks again on the next session with the same instance id, so the
 * server hands back the same address and the TUN stays as it is. A refusal is
 * logged with the server's reason and asked again after a pause.
 * @module
 */

import type { Duplex } from "../../shared/duplex.ts";
import { BufferedReader, closeQuietly, encodeLatin1, writeAll } from "../../shared/pipe.ts";
import {
  encodeL3Request,
  L3_LINE_MAX,
  type L3Grant,
  parseL3Response,
} from "../../shared/l3/control.ts";
import { DatagramKind } from "../../shared/session/datagram_demux.ts";
import { PacketBatch, type TunDevice } from "../../shared/tun/device.ts";

/** One session's layer-3 path: its control stream and its datagrams. */
export interface L3Path {
  /** The control stream (opened to `L3_CONTROL_TARGET`). */
  readonly stream: Duplex;
  /** Sends one DATAGRAM payload (kind byte included); false when dropped. */
  send(payload: Uint8Array): boolean;
  /** Sets the receiver of this session's kind-2 payloads (kind byte included). */
  onPacket(handler: (payload: Uint8Array) => void): void;
  /** Settles when the session ends. */
  readonly closed: Promise<unknown>;
}

/** What the client needs from the tunnel and the host. */
export interface L3ClientDeps {
  /** Opens the control stream on a connected session (waits for one); throws when it cannot. */
  open(): Promise<L3Path>;
  /** Brings the TUN up for the first grant (addresses, MTU, routes). */
  up(grant: L3Grant): Promise<TunDevice>;
  /** The server assigned other addresses than the TUN has (after a server restart). */
  changed?(grant: L3Grant, device: TunDevice): Promise<void>;
  /** This client process's random instance id (hex). */
  instance: string;
  /** Ask for an IPv6 address too. */
  ipv6: boolean;
  /** Log lines (info/warn). */
  log(level: "info" | "warn", message: string): void;
  /** Pause after a refusal or a failed attempt, ms (default 5000). */
  retryMs?: number;
}

/** Counters. */
export interface L3ClientStats {
  /** Packets TUN → session, session → TUN. */
  sent: number;
  received: number;
  /** Packets read from the TUN while no session carried layer 3 (dropped). */
  noPath: number;
  /** Grants received (1 + reconnections). */
  grants: number;
}

/** See the module doc. */
export class L3Client {
  /** Counters. */
  readonly stats: L3ClientStats = { sent: 0, received: 0, noPath: 0, grants: 0 };
  /** The TUN, once up. */
  device: TunDevice | null = null;
  /** The grant in force. */
  grant: L3Grant | null = null;
  readonly #d: L3ClientDeps;
  #path: L3Path | null = null;
  #stopped = false;
  #wake: (() => void) | null = null;
  readonly #tx = new PacketBatch(1, 65535);

  constructor(deps: L3ClientDeps) {
    this.#d = deps;
  }

  /** Runs until {@link stop}: control on each session in turn, and the TUN pump. */
  async run(): Promise<void> {
    let pump: Promise<void> | null = null;
    while (!this.#stopped) {
      let path: L3Path;
      try {
        path = await this.#d.open();
      } catch (e) {
        this.#d.log("warn", `layer 3: cannot open the control stream: ${(e as Error).message}`);
        await this.#pause();
        continue;
      }
      const grant = await this.#ask(path);
      if (!grant) {
        closeQuietly(path.stream);
        await this.#pause();
        continue;
      }
      this.stats.grants++;
      if (!this.device) {
        this.device = await this.#d.up(grant);
        this.#d.log(
          "info",
          `layer 3 up: ${grant.address}${
            grant.address6 ? `, ${grant.address6}` : ""
          }, mtu ${grant.mtu}`,
        );
      } else if (grant.address !== this.grant?.address || grant.address6 !== this.grant?.address6) {
        this.#d.log(
          "warn",
          `layer 3: the server assigned ${grant.address} (was ${this.grant?.address})`,
        );
        await this.#d.changed?.(grant, this.device);
      }
      this.grant = grant;
      path.onPacket((p) => this.#fromTunnel(p));
      this.#path = path;
      pump ??= this.#pump();
      // Until the session (or the control stream) ends, then ask the next session.
      const sink = new Uint8Array(64);
      const streamEnded = (async () => {
        try {
          while ((await path.stream.read(sink)) !== null) { /* nothing more is said */ }
        } catch { /* broken: the session went */ }
      })();
      await Promise.race([path.closed, streamEnded, new Promise<void>((r) => this.#wake = r)]);
      this.#wake = null;
      if (this.#path === path) this.#path = null;
      closeQuietly(path.stream);
    }
    // The pump ends when the caller closes the device.
    void pump;
  }

  /** Sends the request and reads the answer; null (logged) when refused or broken. */
  async #ask(path: L3Path): Promise<L3Grant | null> {
    try {
      await writeAll(
        path.stream,
        encodeL3Request({ instance: this.#d.instance, ipv6: this.#d.ipv6 }),
      );
      const line = await new BufferedReader(path.stream).readLine(L3_LINE_MAX);
      if (line === null) {
        this.#d.log("warn", "layer 3: the server closed the control stream (no layer 3 there?)");
        return null;
      }
      const r = parseL3Response(encodeLatin1(line));
      if (typeof r === "string") {
        this.#d.log("warn", `layer 3: malformed answer from the server: ${r}`);
        return null;
      }
      if (!r.ok) {
        this.#d.log("warn", `layer 3 refused by the server: ${r.reason}`);
        return null;
      }
      return r;
    } catch (e) {
      this.#d.log("warn", `layer 3: control stream failed: ${(e as Error).message}`);
      return null;
    }
  }

  #fromTunnel(payload: Uint8Array): void {
    const dev = this.device;
    if (!dev || payload.length < 21) return;
    const b = this.#tx;
    const n = payload.length - 1;
    if (n > b.slotSize) return;
    b.slots[0].set(payload.subarray(1));
    b.lengths[0] = n;
    b.count = 1;
    try {
      dev.writeBatch(b, 0, 1);
      this.stats.received++;
    } catch { /* a full device drops, as a link would */ }
  }

  async #pump(): Promise<void> {
    const dev = this.device!;
    const rx = new PacketBatch(64, Math.min(65535, Math.max(dev.mtu, 1500)));
    while (!this.#stopped) {
      let n: number;
      try {
        n = await dev.readBatch(rx);
      } catch {
        break;
      }
      if (n === 0) break;
      const path = this.#path;
      for (let i = 0; i < n; i++) {
        const len = rx.lengths[i];
        if (!path) {
          this.stats.noPath++;
          continue;
        }
        // The session queues the datagram as given (it is sent later): one copy per packet.
        const d = new Uint8Array(1 + len);
        d[0] = DatagramKind.l3;
        d.set(rx.slots[i].subarray(0, len), 1);
        if (path.send(d)) this.stats.sent++;
      }
    }
  }

  #pause(): Promise<void> {
    return new Promise((r) => {
      const t = setTimeout(r, this.#d.retryMs ?? 5000);
      this.#wake = () => {
        clearTimeout(t);
        r();
      };
    });
  }

  /** Stops asking; closing the device (the caller's) then ends the pump. */
  stop(): void {
    this.#stopped = true;
    this.#wake?.();
    if (this.#path) closeQuietly(this.#path.stream);
  }
}
