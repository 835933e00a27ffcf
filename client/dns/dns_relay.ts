/**
 * Answers the DNS queries the TUN captures (sent to the TUN's DNS address,
 * or to any address on port 53 with hijack on) through an outbound —
 * normally the router, so the query rides the tunnel and the server side
 * resolves — and remembers every answer's addresses in a {@link NameMap}.
 *
 * One UDP flow carries every query to the upstream resolver. Each query gets
 * an id of the relay's own (so answers to two applications that picked the
 * same id cannot cross) and the application's id is put back in the answer.
 * A query that gets no answer in time, or that cannot be sent, is answered
 * with SERVFAIL, so the application does not wait for its own timeout.
 * @module
 */

import type { Target } from "../../shared/duplex.ts";
import {
  addressesOf,
  buildResponse,
  isDnsError,
  parseQuery,
  parseResponse,
  Rcode,
} from "../../shared/dns/message.ts";
import type { FlowContext, Outbound, UdpFlow } from "../outbound/outbound.ts";
import type { NameMap } from "./name_map.ts";

/** Options of a {@link DnsRelay}. */
export interface DnsRelayOptions {
  /** Where queries go (through `outbound`): the upstream resolver. */
  upstream: Target;
  /** Carries the queries (the router, usually). */
  outbound: Outbound;
  /** Remembers which name each answered address belongs to. */
  names: NameMap;
  /** Give up on an answer after this long, ms (default 5000). */
  timeoutMs?: number;
  /** Queries waiting for an answer at once (default 1024); more get SERVFAIL. */
  maxPending?: number;
  /** Monotonic ms (injectable for tests). */
  now?: () => number;
}

interface Pending {
  /** The application's own query id. */
  appId: number;
  query: Uint8Array;
  resolve: (answer: Uint8Array) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Counters of a relay. */
export interface DnsRelayStats {
  queries: number;
  answered: number;
  failed: number;
  malformed: number;
}

/** The TUN's DNS: queries in, answers out, names remembered. */
export class DnsRelay {
  /** Counters. */
  readonly stats: DnsRelayStats = { queries: 0, answered: 0, failed: 0, malformed: 0 };
  private flow: Promise<UdpFlow> | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = (Math.random() * 65536) | 0;
  private closed = false;

  constructor(private readonly opts: DnsRelayOptions) {}

  /**
   * The answer to `query` (raw DNS message bytes): upstream's, with the
   * application's id, or a SERVFAIL of our own; null for bytes that are not
   * a query (dropped, as a resolver would).
   */
  async resolve(query: Uint8Array): Promise<Uint8Array | null> {
    const q = parseQuery(query);
    if (isDnsError(q)) {
      this.stats.malformed++;
      return null;
    }
    this.stats.queries++;
    const fail = () => {
      this.stats.failed++;
      return buildResponse(query, q, Rcode.SERVFAIL);
    };
    if (this.closed || this.pending.size >= (this.opts.maxPending ?? 1024)) return fail();
    let flow: UdpFlow;
    try {
      flow = await this.openFlow();
    } catch {
      return fail();
    }
    const id = this.freeId();
    const copy = query.slice();
    new DataView(copy.buffer).setUint16(0, id);
    return await new Promise<Uint8Array>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(fail());
      }, this.opts.timeoutMs ?? 5000);
      this.pending.set(id, { appId: q.id, query, resolve, timer });
      if (!flow.send(this.opts.upstream, copy)) {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(fail());
      }
    });
  }

  /** Fails every waiting query and closes the flow. */
  close(): void {
    this.closed = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      const q = parseQuery(p.query);
      if (!isDnsError(q)) p.resolve(buildResponse(p.query, q, Rcode.SERVFAIL));
    }
    this.flow?.then((f) => f.close(), () => {});
    this.flow = null;
  }

  private openFlow(): Promise<UdpFlow> {
    if (!this.flow) {
      const ctx: FlowContext = { inbound: "tun-dns", network: "udp", target: this.opts.upstream };
      const opening = this.opts.outbound.openUdp(ctx, (_from, data) => this.onAnswer(data));
      // A failed open is retried by the next query.
      opening.catch(() => {
        if (this.flow === opening) this.flow = null;
      });
      this.flow = opening;
    }
    return this.flow;
  }

  private onAnswer(data: Uint8Array): void {
    if (data.length < 12) return;
    const id = (data[0] << 8) | data[1];
    const p = this.pending.get(id);
    if (!p) return; // late, duplicate or forged: nobody asked
    const r = parseResponse(data);
    if (isDnsError(r)) return; // wait for a real answer or the timeout
    this.pending.delete(id);
    clearTimeout(p.timer);
    const answer = data.slice();
    new DataView(answer.buffer).setUint16(0, p.appId);
    const learned = addressesOf(r);
    if (learned) {
      const now = this.opts.now?.() ?? performance.now();
      this.opts.names.remember(learned.name, learned.addresses, learned.ttl, now);
    }
    this.stats.answered++;
    p.resolve(answer);
  }

  private freeId(): number {
    for (;;) {
      this.nextId = (this.nextId + 1) & 0xffff;
      if (!this.pending.has(this.nextId)) return this.nextId;
    }
  }
}
