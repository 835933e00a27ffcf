/**
 * The control plane's table of sessions across worker threads
 * (docs/workers.md): the one handshake replay cache, every session id and the
 * worker that owns it, and the session cap. A worker's hello becomes a
 * session only through {@link ReservationTable.reserve}.
 * @module
 */

import { ReplayCache } from "../shared/wire/handshake.ts";
import type { DropCounters } from "./dispatcher.ts";

/** Settings of a {@link ReservationTable}. */
export interface ReservationTableOptions {
  /** Most concurrent sessions over all workers. */
  maxSessions: number;
  /** Replay cache entries. */
  replayCacheSize: number;
  /** The handshake timestamp window, ms (entries are kept twice as long). */
  replayWindowMs: number;
}

/** Result of {@link ReservationTable.reserve}: reserved, or the drop counter to count. */
export type ReserveResult = "ok" | keyof DropCounters;

/** Session ids → owning worker, with the replay cache and the cap. */
export class ReservationTable {
  /** Most concurrent sessions (a reload may change it). */
  maxSessions: number;
  readonly #replay: ReplayCache;
  readonly #owners = new Map<number, number>();

  /** Creates an empty table. */
  constructor(opts: ReservationTableOptions) {
    this.maxSessions = opts.maxSessions;
    this.#replay = new ReplayCache({
      capacity: opts.replayCacheSize,
      windowMs: 2 * opts.replayWindowMs,
    });
  }

  /**
   * Reserves session `sid` for `worker`: refused as a replay when the
   * ephemeral was seen (on any worker), as a collision when the id is taken,
   * at the cap when the table is full. `now` is a monotonic clock, ms.
   */
  reserve(sid: number, ephemeral: Uint8Array, worker: number, now: number): ReserveResult {
    if (this.#replay.has(ephemeral, now)) return "replayedHandshake";
    if (this.#owners.has(sid)) return "idCollision";
    if (this.#owners.size >= this.maxSessions) return "sessionCap";
    this.#replay.add(ephemeral, now);
    this.#owners.set(sid, worker);
    return "ok";
  }

  /** Forgets a session (closed, or its reservation unused); true if it was held. */
  release(sid: number): boolean {
    return this.#owners.delete(sid);
  }

  /** The worker owning `sid`, or undefined. */
  owner(sid: number): number | undefined {
    return this.#owners.get(sid);
  }

  /** Sessions reserved (live or about to be). */
  get size(): number {
    return this.#owners.size;
  }

  /** Every `[session id, worker]`. */
  entries(): IterableIterator<[number, number]> {
    return this.#owners.entries();
  }

  /** Forgets every session of `worker` (it died); returns their ids. */
  releaseWorker(worker: number): number[] {
    const out: number[] = [];
    for (const [sid, w] of this.#owners) if (w === worker) out.push(sid);
    for (const sid of out) this.#owners.delete(sid);
    return out;
  }
}
