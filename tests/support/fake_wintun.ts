/**
 * A fake wintun.dll session for tests on any OS: the "system" side is one
 * end of an in-memory TUN pair (its other end plays the network, e.g. with
 * `runEchoPeer`); packets the system sends wait in a queue that
 * `receive` drains, as Wintun's receive ring does, and `send` hands packets
 * to the system, dropping them when its queue is full, as the send ring does.
 * @module
 */

import { PacketBatch } from "../../shared/tun/device.ts";
import type { TunPairEnd } from "../../shared/tun/pair.ts";
import type { WintunApi } from "../../ffi/tun_windows.ts";

/** {@link WintunApi} over the system end of a TUN pair. */
export class FakeWintun implements WintunApi {
  private readonly queue: Uint8Array[] = [];
  private waiters: (() => void)[] = [];
  private closed = false;
  private readonly pump: Promise<void>;
  /** Counters for assertions. */
  readonly stats = { received: 0, sent: 0, sendDropped: 0 };
  private readonly one: PacketBatch;

  constructor(private readonly system: TunPairEnd, readonly ringPackets = 4096) {
    this.one = new PacketBatch(1, 65535);
    this.pump = this.run();
  }

  private async run(): Promise<void> {
    const b = new PacketBatch(64, 65535);
    while (!this.closed) {
      const n = await this.system.readBatch(b);
      if (n === 0) break;
      for (let i = 0; i < n; i++) {
        if (this.queue.length < this.ringPackets) this.queue.push(b.packet(i).slice());
      }
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    }
  }

  receive(out: Uint8Array): number {
    const p = this.queue.shift();
    if (!p) return -1;
    if (p.length > out.length) return 0;
    out.set(p);
    this.stats.received++;
    return p.length;
  }

  send(packet: Uint8Array): boolean {
    if (this.closed) return false;
    this.one.clear();
    this.one.push(packet);
    const ok = this.system.writeBatch(this.one) === 1;
    if (ok) this.stats.sent++;
    else this.stats.sendDropped++;
    return ok;
  }

  waitReadable(ms: number): Promise<boolean> {
    if (this.queue.length > 0) return Promise.resolve(true);
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== wake);
        resolve(false);
      }, ms);
      const wake = () => {
        clearTimeout(t);
        resolve(true);
      };
      this.waiters.push(wake);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.system.close();
    for (const w of this.waiters) w();
    this.waiters = [];
  }

  /** Resolves when the pump ended (after {@link close}). */
  done(): Promise<void> {
    return this.pump;
  }
}
