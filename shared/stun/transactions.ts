/**
 * STUN client transactions over UDP (RFC 8489 §6.2.1): a request is sent
 * again after RTO, 2·RTO, 4·RTO … until an answer or `Rc` sends, then times
 * out after `Rm`·RTO more. Sans-I/O: the caller sends what {@link
 * Transactions.due} returns and reports answers with {@link
 * Transactions.settle}; nothing here reads a clock.
 * @module
 */

import { toHex } from "../crypto/keys.ts";

/** Retransmission settings. */
export interface RetransmitConfig {
  /** First retransmission timeout, ms (RFC: 500 or more). */
  rtoMs: number;
  /** Sends in all (RFC default 7). */
  maxSends: number;
  /** After the last send, wait this many RTOs for an answer (RFC default 16). */
  lastWaitRtos: number;
}

/** The RFC's defaults, shortened at the end: an answer 8 s after the last send is no use here. */
export const DEFAULT_RETRANSMIT: RetransmitConfig = { rtoMs: 500, maxSends: 7, lastWaitRtos: 16 };

/** One request in flight. */
export interface Transaction<T> {
  /** Its transaction id as hex (the map key). */
  readonly key: string;
  /** The bytes to (re)send. */
  readonly bytes: Uint8Array;
  /** What the owner needs to know when it settles. */
  readonly ctx: T;
  /** Sends so far. */
  sends: number;
  /** When it is due again (a send, or the timeout), ms. */
  due: number;
  /** Timeout now, doubled per send. */
  rto: number;
}

/** Hex of a transaction id (the map key). */
export const tidKey: (tid: Uint8Array) => string = toHex;

/** Requests in flight, keyed by transaction id. */
export class Transactions<T> {
  private readonly live = new Map<string, Transaction<T>>();

  constructor(private readonly cfg: RetransmitConfig = DEFAULT_RETRANSMIT) {}

  /** Starts a transaction for `bytes` (a request whose id is `tid`); returns the bytes to send now. */
  begin(tid: Uint8Array, bytes: Uint8Array, ctx: T, now: number): Uint8Array {
    const key = tidKey(tid);
    this.live.set(key, {
      key,
      bytes,
      ctx,
      sends: 1,
      due: now + this.cfg.rtoMs,
      rto: this.cfg.rtoMs,
    });
    return bytes;
  }

  /** Ends the transaction `tid` answered; its context, or undefined when none is in flight. */
  settle(tid: Uint8Array): T | undefined {
    const key = tidKey(tid);
    const t = this.live.get(key);
    if (!t) return undefined;
    this.live.delete(key);
    return t.ctx;
  }

  /** The context of `tid` when it is in flight (it stays in flight). */
  peek(tid: Uint8Array): T | undefined {
    return this.live.get(tidKey(tid))?.ctx;
  }

  /** True when `tid` is in flight. */
  has(tid: Uint8Array): boolean {
    return this.live.has(tidKey(tid));
  }

  /**
   * At `now`: requests to send again (`resend`) and those that timed out
   * (`expired`, removed).
   */
  due(now: number): { resend: Uint8Array[]; expired: T[] } {
    const resend: Uint8Array[] = [];
    const expired: T[] = [];
    for (const t of this.live.values()) {
      if (t.due > now) continue;
      if (t.sends >= this.cfg.maxSends) {
        this.live.delete(t.key);
        expired.push(t.ctx);
        continue;
      }
      t.sends++;
      t.rto *= 2;
      t.due = now + (t.sends >= this.cfg.maxSends ? this.cfg.lastWaitRtos * this.cfg.rtoMs : t.rto);
      resend.push(t.bytes);
    }
    return { resend, expired };
  }

  /** The earliest time something is due, ms (Infinity when nothing is in flight). */
  nextDue(): number {
    let d = Infinity;
    for (const t of this.live.values()) if (t.due < d) d = t.due;
    return d;
  }

  /** Calls `fn` with the context of each transaction in flight. */
  forEach(fn: (ctx: T) => void): void {
    for (const t of this.live.values()) fn(t.ctx);
  }

  /** Forgets every transaction. */
  clear(): void {
    this.live.clear();
  }

  /** How many are in flight. */
  get size(): number {
    return this.live.size;
  }
}
