/**
 * UDP flows with an endpoint-independent ("full cone", RFC 4787 §4.1) mapping: one flow
 * per application source address:port, whatever destinations it sends to; a reply from
 * any remote address reaches it. Flows expire after an idle timeout (refreshed by traffic
 * in either direction) and their number is bounded: a new flow over the bound evicts the
 * least recently used one. Sans-I/O: `now` is passed in; nothing here reads a clock.
 * @module
 */

/** One UDP mapping. */
export interface UdpFlow {
  /** Flow number (shared numbering with TCP flows). */
  readonly flow: number;
  /** The application's address (a copy). */
  readonly src: Uint8Array;
  /** The application's port. */
  readonly srcPort: number;
  /** Last traffic either way, ms. */
  lastSeen: number;
  /** Map key. */
  readonly key: number | string;
}

/** Bounds of a {@link UdpFlows}. */
export interface UdpFlowOptions {
  /** Flows held at once. Default 1024. */
  maxFlows?: number;
  /** Idle ms before a flow expires. Default 60000. */
  idleTimeout?: number;
}

/** Key of an application endpoint: a number for IPv4 (address × 65536 + port), else a string. */
export function endpointKey(addr: Uint8Array, port: number): number | string {
  if (addr.length === 4) {
    return (((addr[0] << 24) | (addr[1] << 16) | (addr[2] << 8) | addr[3]) >>> 0) * 65536 + port;
  }
  let k = "";
  for (let i = 0; i < addr.length; i += 2) k += String.fromCharCode((addr[i] << 8) | addr[i + 1]);
  return k + String.fromCharCode(port);
}

/** The table of UDP mappings, in least-recently-used order. */
export class UdpFlows {
  readonly #byKey = new Map<number | string, UdpFlow>();
  readonly #byFlow = new Map<number, UdpFlow>();
  /** Flows held at most. */
  readonly maxFlows: number;
  /** Idle ms before a flow expires. */
  readonly idleTimeout: number;

  /** Creates an empty table (see {@link UdpFlowOptions}). */
  constructor(opts: UdpFlowOptions = {}) {
    this.maxFlows = Math.max(1, opts.maxFlows ?? 1024);
    this.idleTimeout = opts.idleTimeout ?? 60_000;
  }

  /** Flows held. */
  get size(): number {
    return this.#byKey.size;
  }

  /** The flow of an application endpoint, or undefined. Refreshes it when `now` is given. */
  find(addr: Uint8Array, port: number, now?: number): UdpFlow | undefined {
    const key = endpointKey(addr, port);
    const f = this.#byKey.get(key);
    if (f && now !== undefined) this.#touch(f, now);
    return f;
  }

  /** The flow with this number, or undefined. */
  get(flow: number): UdpFlow | undefined {
    return this.#byFlow.get(flow);
  }

  /** Refreshes a flow (traffic seen at `now`). */
  touch(flow: number, now: number): void {
    const f = this.#byFlow.get(flow);
    if (f) this.#touch(f, now);
  }

  #touch(f: UdpFlow, now: number): void {
    f.lastSeen = now;
    this.#byKey.delete(f.key);
    this.#byKey.set(f.key, f);
  }

  /**
   * Adds a flow for `addr:port` numbered `flow` (copying `addr`). Returns the flow evicted
   * to make room, if any.
   */
  add(flow: number, addr: Uint8Array, port: number, now: number): UdpFlow | undefined {
    let evicted: UdpFlow | undefined;
    if (this.#byKey.size >= this.maxFlows) {
      for (const f of this.#byKey.values()) {
        evicted = f;
        break;
      }
      if (evicted) this.remove(evicted.flow);
    }
    const key = endpointKey(addr, port);
    const f: UdpFlow = { flow, src: addr.slice(), srcPort: port, lastSeen: now, key };
    this.#byKey.set(key, f);
    this.#byFlow.set(flow, f);
    return evicted;
  }

  /** Removes a flow; true when it existed. */
  remove(flow: number): boolean {
    const f = this.#byFlow.get(flow);
    if (!f) return false;
    this.#byFlow.delete(flow);
    this.#byKey.delete(f.key);
    return true;
  }

  /** Removes the flows idle since `now - idleTimeout` or longer; returns their numbers. */
  expire(now: number, out: number[] = []): number[] {
    for (const f of this.#byKey.values()) {
      if (f.lastSeen + this.idleTimeout > now) break;
      out.push(f.flow);
    }
    for (const flow of out) this.remove(flow);
    return out;
  }

  /** When the least recently used flow expires, ms (`Infinity` when empty). */
  nextDeadline(): number {
    for (const f of this.#byKey.values()) return f.lastSeen + this.idleTimeout;
    return Infinity;
  }
}
