/**
 * A tiny typed event emitter for the library face: state changes, traffic
 * counters and log records, subscribed to by embedding programs.
 * @module
 */

/** Maps event names to their payload types. */
export type EventMap = Record<string, unknown>;

import type { Session } from "./session/session.ts";

/** Subscribe with {@link Emitter.on}; the returned function unsubscribes. */
export class Emitter<E extends EventMap> {
  private readonly handlers = new Map<keyof E, Set<(v: never) => void>>();

  /** Calls `fn` for every `type` event until the returned function is called. */
  on<K extends keyof E>(type: K, fn: (value: E[K]) => void): () => void {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, set = new Set());
    set.add(fn as (v: never) => void);
    return () => set!.delete(fn as (v: never) => void);
  }

  /** Delivers `value` to the subscribers of `type`; a throwing handler does not stop the others. */
  emit<K extends keyof E>(type: K, value: E[K]): void {
    const set = this.handlers.get(type);
    if (!set) return;
    for (const fn of set) {
      try {
        (fn as (v: E[K]) => void)(value);
      } catch {
        // Subscribers must not break the daemon.
      }
    }
  }
}

/** Traffic counters reported every few seconds. */
export interface TrafficStats {
  /** Milliseconds since start. */
  uptimeMs: number;
  /** Live sessions. */
  sessions: number;
  /** Open streams across sessions. */
  streams: number;
  bytesSent: number;
  bytesReceived: number;
  packetsSent: number;
  packetsReceived: number;
  /** Packets declared lost (their frames were retransmitted in new packets). */
  packetsLost: number;
  /** Stream bytes sent again after a loss. */
  retransmittedBytes: number;
  /** Smoothed RTT of the busiest session, ms (0 if none). */
  rttMs: number;
  /** Congestion window of the busiest session, bytes (0 if none). */
  cwnd: number;
}

/**
 * Sums the counters of `sessions`; RTT and congestion window come from the
 * busiest session (most bytes either way).
 */
export function trafficStats(sessions: Iterable<Session>, uptimeMs: number): TrafficStats {
  const t: TrafficStats = {
    uptimeMs,
    sessions: 0,
    streams: 0,
    bytesSent: 0,
    bytesReceived: 0,
    packetsSent: 0,
    packetsReceived: 0,
    packetsLost: 0,
    retransmittedBytes: 0,
    rttMs: 0,
    cwnd: 0,
  };
  let busiest = -1;
  for (const s of sessions) {
    const st = s.stats;
    t.sessions++;
    t.streams += s.streamCount;
    t.bytesSent += st.bytesSent;
    t.bytesReceived += st.bytesReceived;
    t.packetsSent += st.packetsSent;
    t.packetsReceived += st.packetsReceived;
    t.packetsLost += st.packetsLost;
    t.retransmittedBytes += st.retransmittedBytes;
    const volume = st.bytesSent + st.bytesReceived;
    if (volume > busiest) {
      busiest = volume;
      t.rttMs = s.rtt.smoothed;
      t.cwnd = s.cc.cwnd;
    }
  }
  return t;
}
