/**
 * Datagrams one worker thread hands to another (docs/workers.md): a client
 * whose 4-tuple changed may hash to a worker that does not own its session;
 * that worker packs the datagram with its source address and listener into a
 * {@link ForwardBatch} (one per target worker and receive batch) and posts the
 * buffer, transferred, to the owner, which reads it back with
 * {@link readForwards} and handles each datagram as if it had received it.
 *
 * Record layout: `listener u8 | port u16be | host length u8 | host (ASCII) |
 * data length u16be | data`.
 * @module
 */

import type { WireAddress } from "./worker_protocol.ts";

/** Largest datagram forwarded (longer ones are not: no session sends them). */
export const MAX_FORWARD_DATAGRAM = 65535;

/** Records packed for one target worker. */
export class ForwardBatch {
  #buf: Uint8Array<ArrayBuffer>;
  #len = 0;
  #count = 0;
  readonly #enc = new TextEncoder();

  /** Creates an empty batch with `capacity` bytes to start with (it grows). */
  constructor(capacity = 16 * 1024) {
    this.#buf = new Uint8Array(capacity);
  }

  /** Datagrams packed since the last {@link take}. */
  get count(): number {
    return this.#count;
  }

  /** Packs one datagram (copied); false if it cannot be (too long, host too long). */
  add(listener: number, from: WireAddress, data: Uint8Array): boolean {
    const host = from.hostname;
    if (data.length > MAX_FORWARD_DATAGRAM || host.length > 255 || listener > 255) return false;
    const need = 6 + host.length + data.length;
    this.#reserve(need);
    const b = this.#buf;
    let o = this.#len;
    b[o++] = listener;
    b[o++] = from.port >>> 8;
    b[o++] = from.port & 0xff;
    const written = this.#enc.encodeInto(host, b.subarray(o + 1, o + 1 + host.length)).written;
    if (written !== host.length) return false; // not ASCII: never an IP literal
    b[o++] = host.length;
    o += host.length;
    b[o++] = data.length >>> 8;
    b[o++] = data.length & 0xff;
    b.set(data, o);
    this.#len = o + data.length;
    this.#count++;
    return true;
  }

  /**
   * The packed records and their length; the batch starts over on a new
   * buffer (the old one is meant to be transferred).
   */
  take(): { buffer: ArrayBuffer; length: number } {
    const out = { buffer: this.#buf.buffer, length: this.#len };
    this.#buf = new Uint8Array(Math.max(16 * 1024, this.#len));
    this.#len = 0;
    this.#count = 0;
    return out;
  }

  #reserve(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const next = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + n));
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
  }
}

/**
 * Calls `each` with every record of a packed buffer (the data is a view into
 * it); stops at the first malformed record. Returns how many were read.
 */
export function readForwards(
  buffer: ArrayBuffer,
  length: number,
  each: (listener: number, hostname: string, port: number, data: Uint8Array) => void,
): number {
  const b = new Uint8Array(buffer, 0, Math.min(length, buffer.byteLength));
  const dec = new TextDecoder();
  let o = 0;
  let n = 0;
  while (o + 4 <= b.length) {
    const listener = b[o];
    const port = (b[o + 1] << 8) | b[o + 2];
    const hl = b[o + 3];
    o += 4;
    if (hl === 0 || o + hl + 2 > b.length) break;
    const hostname = dec.decode(b.subarray(o, o + hl));
    o += hl;
    const dl = (b[o] << 8) | b[o + 1];
    o += 2;
    if (o + dl > b.length) break;
    each(listener, hostname, port, b.subarray(o, o + dl));
    o += dl;
    n++;
  }
  return n;
}
