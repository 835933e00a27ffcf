/**
 * STUN Binding transactions (RFC 8489 §3, RFC 5780 for CHANGE-REQUEST),
 * sans-I/O: {@link BindingClient.request} gives the bytes to send to a
 * server, {@link BindingClient.receive} takes a datagram and its source and
 * says whether it answered one of ours. An answer counts only when its
 * transaction id is one in flight and it comes from the address the request
 * went to (a request asking the server to answer from another address, for
 * the NAT filtering test, accepts any source: the 96-bit id is then all
 * that binds it).
 * @module
 */

import {
  Attr,
  attrAddress,
  errorCode,
  fingerprintOk,
  looksLikeStun,
  Method,
  newTransactionId,
  parseStun,
  StunWriter,
} from "./message.ts";
import { DEFAULT_RETRANSMIT, type RetransmitConfig, Transactions } from "./transactions.ts";
import { sameNetAddr } from "../net/ip.ts";

/** What a Binding answer says. */
export interface BindingResult {
  /** The server the request went to. */
  server: Deno.NetAddr;
  /** Where the answer came from. */
  from: Deno.NetAddr;
  /** The reflexive address: the request's source as the server saw it. */
  mapped: Deno.NetAddr;
  /** RFC 5780 OTHER-ADDRESS: the server's alternate address and port, if it has one. */
  other?: Deno.NetAddr;
  /** Round trip, ms. */
  rttMs: number;
  /** What the request asked for (copied from {@link BindingRequestOptions}). */
  tag?: string;
}

/** Options of one request. */
export interface BindingRequestOptions {
  /** Ask the server to answer from its other IP (RFC 5780 CHANGE-REQUEST). */
  changeIp?: boolean;
  /** Ask the server to answer from its other port. */
  changePort?: boolean;
  /** Carried into the result and the timeout, for the caller. */
  tag?: string;
}

interface Pending {
  server: Deno.NetAddr;
  sentAt: number;
  anySource: boolean;
  tag?: string;
}

/** Binding requests in flight. */
export class BindingClient {
  private readonly tx: Transactions<Pending>;
  /** Datagrams that looked like STUN but answered nothing of ours. */
  dropped = 0;

  constructor(retransmit: RetransmitConfig = DEFAULT_RETRANSMIT) {
    this.tx = new Transactions(retransmit);
  }

  /** A Binding request to `server`: the bytes to send now. */
  request(server: Deno.NetAddr, now: number, opts: BindingRequestOptions = {}): Uint8Array {
    const tid = newTransactionId();
    const w = new StunWriter(Method.binding, "request", tid);
    const change = (opts.changeIp ? 4 : 0) | (opts.changePort ? 2 : 0);
    if (change) w.u32(Attr.changeRequest, change);
    const bytes = w.finish({ fingerprint: true });
    const p: Pending = { server, sentAt: now, anySource: change !== 0 };
    if (opts.tag !== undefined) p.tag = opts.tag;
    return this.tx.begin(tid, bytes, p, now);
  }

  /**
   * A datagram from `from`: the result when it answers a request of ours,
   * `"error"` with the reason when it is an error answer, null otherwise
   * (not STUN, or not ours: dropped).
   */
  receive(
    data: Uint8Array,
    from: Deno.NetAddr,
    now: number,
  ): BindingResult | { error: string; server: Deno.NetAddr; tag?: string } | null {
    if (!looksLikeStun(data)) return null;
    const m = parseStun(data);
    if (
      !m || !fingerprintOk(m) || m.method !== Method.binding ||
      (m.cls !== "success" && m.cls !== "error")
    ) {
      this.dropped++;
      return null;
    }
    const p = this.tx.peek(m.tid);
    if (!p || (!p.anySource && !sameNetAddr(from, p.server))) {
      this.dropped++;
      return null;
    }
    if (m.cls === "error") {
      this.tx.settle(m.tid);
      const e = errorCode(m);
      return {
        error: e ? `${e.code} ${e.reason}`.trim() : "error",
        server: p.server,
        ...(p.tag !== undefined ? { tag: p.tag } : {}),
      };
    }
    const mapped = attrAddress(m, Attr.xorMappedAddress, true) ??
      attrAddress(m, Attr.mappedAddress, false);
    if (!mapped) {
      this.dropped++;
      return null;
    }
    this.tx.settle(m.tid);
    const out: BindingResult = { server: p.server, from, mapped, rttMs: now - p.sentAt };
    const other = attrAddress(m, Attr.otherAddress, false);
    if (other) out.other = other;
    if (p.tag !== undefined) out.tag = p.tag;
    return out;
  }

  /** Requests to send again now, and those that got no answer (removed). */
  poll(now: number): { resend: { bytes: Uint8Array; to: Deno.NetAddr }[]; expired: Pending[] } {
    const resend: { bytes: Uint8Array; to: Deno.NetAddr }[] = [];
    // A request's bytes hold its transaction id: that finds its server.
    const { resend: bytes, expired } = this.tx.due(now);
    for (const b of bytes) {
      const p = this.tx.peek(b.subarray(8, 20));
      if (p) resend.push({ bytes: b, to: p.server });
    }
    return { resend, expired };
  }

  /** When {@link poll} must run next, ms. */
  nextDeadline(): number {
    return this.tx.nextDue();
  }

  /** Requests in flight. */
  get pending(): number {
    return this.tx.size;
  }
}
