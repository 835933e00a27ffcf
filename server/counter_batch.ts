/**
 * Per-key traffic a worker thread gathers between reports to the main thread
 * (docs/workers.md): bytes up and down and streams opened, summed per access
 * key and taken as rows every ~200 ms, when a session closes, and as soon as
 * {@link EAGER_COUNTER_BYTES} have gathered (so a traffic limit is enforced
 * within about that much, not 200 ms of a fast transfer).
 * @module
 */

import type { CounterRow } from "./worker_protocol.ts";

/** Bytes after which a worker reports its counters at once. */
export const EAGER_COUNTER_BYTES = 256 * 1024;

/** Sums of one key since the last {@link CounterBatch.take}. */
interface Sums {
  up: number;
  down: number;
  streams: number;
}

/** Counter deltas per key (hex). */
export class CounterBatch {
  readonly #sums = new Map<string, Sums>();
  #bytes = 0;

  /** Bytes (up + down, all keys) counted since the last take. */
  get pendingBytes(): number {
    return this.#bytes;
  }

  #of(keyHex: string): Sums {
    let s = this.#sums.get(keyHex);
    if (!s) this.#sums.set(keyHex, s = { up: 0, down: 0, streams: 0 });
    return s;
  }

  /** Adds relayed payload bytes of a session under `keyHex`. */
  bytes(keyHex: string, up: number, down: number): void {
    const s = this.#of(keyHex);
    s.up += up;
    s.down += down;
    this.#bytes += up + down;
  }

  /** Counts a stream opened under `keyHex`. */
  stream(keyHex: string): void {
    this.#of(keyHex).streams++;
  }

  /** True when nothing was counted since the last take. */
  get empty(): boolean {
    return this.#sums.size === 0;
  }

  /** The rows counted since the last call; starts over. */
  take(): CounterRow[] {
    const rows: CounterRow[] = [];
    for (const [k, s] of this.#sums) rows.push([k, s.up, s.down, s.streams]);
    this.#sums.clear();
    this.#bytes = 0;
    return rows;
  }
}
