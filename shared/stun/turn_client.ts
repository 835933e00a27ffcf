/**
 * A TURN client for one allocation and one peer (RFC 8656, written so that
 * RFC 5766 servers such as coturn work too), sans-I/O like the session core:
 * it takes datagrams from the TURN server and the time, and gives back
 * datagrams to send to the TURN server, events, and its next deadline.
 *
 * Life: Allocate (unauthenticated, the server answers 401 with REALM and
 * NONCE) → Allocate with long-term credentials (MESSAGE-INTEGRITY with
 * MD5(user:realm:password), FINGERPRINT) → CreatePermission and ChannelBind
 * for the peer → data as ChannelData (Send/Data indications while the
 * channel is not bound, or when the server refuses channels) → Refresh
 * before the lifetime ends, permission and channel refreshed on their own
 * timer → Refresh with LIFETIME 0 on close. A 438 (stale nonce) takes the
 * new nonce and sends the request again.
 *
 * What comes from elsewhere than the TURN server is the driver's to drop
 * (it checks the source address); here a response is taken only for a
 * transaction in flight, a success for an authenticated request only with
 * a valid MESSAGE-INTEGRITY, ChannelData only on the bound channel, and a
 * Data indication only from the peer.
 * @module
 */

import {
  Attr,
  attrAddress,
  attrString,
  attrU32,
  CHANNEL_MIN,
  checkIntegrity,
  errorCode,
  fingerprintOk,
  looksLikeStun,
  Method,
  newTransactionId,
  parseChannelData,
  parseStun,
  type StunMessage,
  StunWriter,
  writeChannelData,
} from "./message.ts";
import { longTermKey } from "./credentials.ts";
import { sameNetAddr } from "../net/ip.ts";
import { DEFAULT_RETRANSMIT, type RetransmitConfig, Transactions } from "./transactions.ts";

/** The TURN account. */
export interface TurnCredentials {
  /** Long-term credential username. */
  readonly username: string;
  /** Its password (never logged). */
  readonly password: string;
}

/** Options of {@link TurnClient}. */
export interface TurnClientOptions {
  /** The account. */
  credentials: TurnCredentials;
  /** The peer the relay talks to (the ostp server), a resolved address. */
  peer: Deno.NetAddr;
  /** Lifetime to ask for, s (the server may give less or more; default: its default). */
  lifetimeSec?: number;
  /** How often the permission and the channel are refreshed, s (they last 300 and 600 s); default 120. */
  permissionRefreshSec?: number;
  /** SOFTWARE attribute; default "ostp". */
  software?: string;
  /** Retransmission settings (tests shorten them). */
  retransmit?: RetransmitConfig;
  /** The channel number to bind (default 0x4000). */
  channel?: number;
  /**
   * The TURN server is reached over a byte stream (TCP, TLS): ChannelData is
   * padded to four bytes and requests are sent once (the stream retransmits),
   * timing out after {@link STREAM_REQUEST_TIMEOUT_MS} unless `retransmit` says.
   */
  stream?: boolean;
}

/** How long a request over a stream waits for its answer, ms. */
export const STREAM_REQUEST_TIMEOUT_MS = 10_000;

/** The client's state. */
export type TurnState = "idle" | "allocating" | "allocated" | "closing" | "closed" | "failed";

/** What happened, for logs and the carrier. */
export type TurnEvent =
  | {
    type: "allocated";
    /** The relayed transport address: what the peer sees as the client. */
    relayed: Deno.NetAddr;
    /** The client's address as the TURN server sees it (XOR-MAPPED-ADDRESS), if given. */
    mapped?: Deno.NetAddr;
    /** Granted lifetime, s. */
    lifetime: number;
  }
  /** The peer may now be reached (permission installed). */
  | { type: "permitted" }
  /** The channel is bound: data goes as ChannelData from now on. */
  | { type: "channel"; channel: number }
  /** ChannelBind was refused: data stays on Send/Data indications. */
  | { type: "no-channel"; reason: string }
  /** The allocation was refreshed for `lifetime` s. */
  | { type: "refreshed"; lifetime: number }
  /** The allocation is gone (LIFETIME 0 answered, or the close timed out). */
  | { type: "deallocated"; confirmed: boolean }
  /**
   * Failed for good: `auth` when the credentials were refused (wrong user
   * or password), `lost` when an allocation that worked is gone (refresh
   * refused or unanswered).
   */
  | { type: "failed"; reason: string; auth: boolean; lost: boolean };

type Purpose = "allocate" | "refresh" | "permission" | "channel" | "deallocate";

interface Pending {
  purpose: Purpose;
  /** The request carried MESSAGE-INTEGRITY (its success must too). */
  authed: boolean;
  /** 438 retries so far. */
  stale: number;
}

const REQUESTED_TRANSPORT_UDP = new Uint8Array([17, 0, 0, 0]);

/** One allocation with one peer. */
export class TurnClient {
  /** Current state. */
  state: TurnState = "idle";
  /** The relayed address once allocated. */
  relayed: Deno.NetAddr | null = null;
  /** The mapped address the TURN server reported, if any. */
  mapped: Deno.NetAddr | null = null;
  /** Granted lifetime, s. */
  lifetime = 0;
  /** The peer may be reached (permission installed). */
  permitted = false;
  /** The bound channel number, or 0 while none. */
  channel = 0;
  /** Counters: refreshes done, stale nonces seen, messages dropped as not ours. */
  readonly counters = { refreshes: 0, staleNonces: 0, dropped: 0 };

  private realm = "";
  private nonce = "";
  private key: Uint8Array | null = null;
  private readonly tx: Transactions<Pending>;
  private out: Uint8Array[] = [];
  private events: TurnEvent[] = [];
  private refreshAt = Infinity;
  private permissionAt = Infinity;
  private closeBy = Infinity;
  private readonly channelWanted: number;
  private channelRefused = false;
  private readonly dataBuf = new Uint8Array(65536 + 4);
  private readonly software: string;

  constructor(private readonly opts: TurnClientOptions) {
    this.tx = new Transactions(
      opts.retransmit ??
        (opts.stream
          ? { rtoMs: STREAM_REQUEST_TIMEOUT_MS, maxSends: 1, lastWaitRtos: 1 }
          : DEFAULT_RETRANSMIT),
    );
    this.channelWanted = opts.channel ?? CHANNEL_MIN;
    this.software = opts.software ?? "ostp";
  }

  /** Sends the first Allocate. */
  start(now: number): void {
    if (this.state !== "idle") return;
    this.state = "allocating";
    this.request("allocate", false, now);
  }

  /** Datagrams to send to the TURN server, in order (the caller owns them). */
  takeTransmits(): Uint8Array[] {
    const o = this.out;
    this.out = [];
    return o;
  }

  /** Events since the last call. */
  takeEvents(): TurnEvent[] {
    const e = this.events;
    this.events = [];
    return e;
  }

  /** When {@link poll} must run next, ms (Infinity: nothing scheduled). */
  nextDeadline(): number {
    return Math.min(this.tx.nextDue(), this.refreshAt, this.permissionAt, this.closeBy);
  }

  /** Retransmissions, timeouts and refreshes due at `now`. */
  poll(now: number): void {
    const { resend, expired } = this.tx.due(now);
    for (const b of resend) this.out.push(b);
    for (const p of expired) this.timedOut(p);
    if (now >= this.closeBy && this.state === "closing") this.finishClose(false);
    if (this.state !== "allocated") return;
    if (now >= this.refreshAt) {
      this.refreshAt = Infinity;
      this.request("refresh", true, now);
    }
    if (now >= this.permissionAt) {
      this.permissionAt = Infinity;
      this.request("permission", true, now);
      if (!this.channelRefused) this.request("channel", true, now);
    }
  }

  /**
   * A datagram from the TURN server. Returns the peer's payload when it
   * carried one (a view, valid during the call), else null (a control
   * message consumed, or something not ours dropped).
   */
  receive(data: Uint8Array, now: number): Uint8Array | null {
    if (data.length >= 4 && (data[0] & 0xc0) === 0x40) {
      const cd = parseChannelData(data);
      if (!cd || this.channel === 0 || cd.channel !== this.channel) {
        this.counters.dropped++;
        return null;
      }
      return cd.data;
    }
    if (!looksLikeStun(data)) {
      this.counters.dropped++;
      return null;
    }
    const m = parseStun(data);
    if (!m || !fingerprintOk(m)) {
      this.counters.dropped++;
      return null;
    }
    if (m.cls === "indication") {
      if (m.method !== Method.data || !this.permitted) {
        this.counters.dropped++;
        return null;
      }
      const from = attrAddress(m, Attr.xorPeerAddress, true);
      const payload = from && sameNetAddr(from, this.opts.peer) ? findData(m) : null;
      if (!payload) this.counters.dropped++;
      return payload;
    }
    if (m.cls === "request") {
      this.counters.dropped++;
      return null;
    }
    this.answer(m, now);
    return null;
  }

  /**
   * The datagram to send to the TURN server for `payload` to the peer:
   * ChannelData when the channel is bound, a Send indication while only the
   * permission is, null before (the session sends again). The result is a
   * view of a buffer reused by the next call.
   */
  wrap(payload: Uint8Array): Uint8Array | null {
    if (this.state !== "allocated") return null;
    if (this.channel !== 0) {
      let n = writeChannelData(this.channel, payload, this.dataBuf);
      if (this.opts.stream) { while (n & 3) this.dataBuf[n++] = 0; }
      return this.dataBuf.subarray(0, n);
    }
    if (!this.permitted) return null;
    return new StunWriter(Method.send, "indication", newTransactionId())
      .address(Attr.xorPeerAddress, this.opts.peer, true)
      .add(Attr.data, payload)
      .finish({ fingerprint: true });
  }

  /**
   * Checks that the allocation still exists (a Refresh now, unless one is in
   * flight): the link asks when it sends but hears nothing back, since a
   * relay that restarted drops ChannelData in silence. A relay that lost the
   * allocation answers with an error, which fails the client as `lost`.
   */
  probe(now: number): void {
    if (this.state !== "allocated" || this.refreshInFlight()) return;
    this.refreshAt = Infinity;
    this.request("refresh", true, now);
  }

  private refreshInFlight(): boolean {
    let found = false;
    this.tx.forEach((p) => {
      if (p.purpose === "refresh") found = true;
    });
    return found;
  }

  /**
   * Deallocates: a Refresh with LIFETIME 0, answered or given up after
   * `waitMs`. A client that never allocated is closed at once.
   */
  close(now: number, waitMs = 1000): void {
    if (this.state === "closed" || this.state === "closing") return;
    if (this.state !== "allocated") {
      this.tx.clear();
      this.state = "closed";
      this.refreshAt = this.permissionAt = this.closeBy = Infinity;
      return;
    }
    this.state = "closing";
    this.refreshAt = this.permissionAt = Infinity;
    this.closeBy = now + waitMs;
    this.request("deallocate", true, now);
  }

  // --- requests ---

  private request(purpose: Purpose, authed: boolean, now: number, stale = 0): void {
    const { tid, bytes } = this.build(purpose, authed);
    this.out.push(this.tx.begin(tid, bytes, { purpose, authed, stale }, now));
  }

  private build(purpose: Purpose, authed: boolean): { tid: Uint8Array; bytes: Uint8Array } {
    const tid = newTransactionId();
    const method = purpose === "allocate"
      ? Method.allocate
      : purpose === "permission"
      ? Method.createPermission
      : purpose === "channel"
      ? Method.channelBind
      : Method.refresh;
    const w = new StunWriter(method, "request", tid);
    if (purpose === "allocate") {
      w.add(Attr.requestedTransport, REQUESTED_TRANSPORT_UDP);
      if (this.opts.lifetimeSec) w.u32(Attr.lifetime, this.opts.lifetimeSec);
    } else if (purpose === "refresh" && this.opts.lifetimeSec) {
      w.u32(Attr.lifetime, this.opts.lifetimeSec);
    } else if (purpose === "deallocate") {
      w.u32(Attr.lifetime, 0);
    } else if (purpose === "permission") {
      w.address(Attr.xorPeerAddress, this.opts.peer, true);
    } else if (purpose === "channel") {
      const c = new Uint8Array(4);
      c[0] = this.channelWanted >> 8;
      c[1] = this.channelWanted & 0xff;
      w.add(Attr.channelNumber, c).address(Attr.xorPeerAddress, this.opts.peer, true);
    }
    w.string(Attr.software, this.software);
    if (authed && this.key) {
      w.string(Attr.username, this.opts.credentials.username)
        .string(Attr.realm, this.realm)
        .string(Attr.nonce, this.nonce);
      return { tid, bytes: w.finish({ integrityKey: this.key, fingerprint: true }) };
    }
    return { tid, bytes: w.finish({ fingerprint: true }) };
  }

  // --- answers ---

  private answer(m: StunMessage, now: number): void {
    const p = this.tx.peek(m.tid);
    if (!p) {
      this.counters.dropped++;
      return;
    }
    // A success to an authenticated request must prove it knows the key; a
    // forged one leaves the real transaction waiting for the real answer.
    if (m.cls === "success" && p.authed && (!this.key || !checkIntegrity(m, this.key))) {
      this.counters.dropped++;
      return;
    }
    this.tx.settle(m.tid);
    if (m.cls === "success") {
      this.succeeded(p, m, now);
      return;
    }
    const err = errorCode(m);
    const code = err?.code ?? 0;
    const reason = err ? `${err.code} ${err.reason}`.trim() : "error without a code";
    if (code === 401 && p.purpose === "allocate" && !p.authed) {
      const realm = attrString(m, Attr.realm);
      const nonce = attrString(m, Attr.nonce);
      if (!realm || !nonce) {
        this.fail(`TURN server answered 401 without REALM/NONCE`, false);
        return;
      }
      this.realm = realm;
      this.nonce = nonce;
      this.key = longTermKey(this.opts.credentials.username, realm, this.opts.credentials.password);
      this.request("allocate", true, now);
      return;
    }
    if (code === 438 && p.stale < 3) {
      const nonce = attrString(m, Attr.nonce);
      const realm = attrString(m, Attr.realm);
      if (nonce) {
        this.counters.staleNonces++;
        this.nonce = nonce;
        if (realm && realm !== this.realm && this.key) {
          this.realm = realm;
          this.key = longTermKey(
            this.opts.credentials.username,
            realm,
            this.opts.credentials.password,
          );
        }
        this.request(p.purpose, true, now, p.stale + 1);
        return;
      }
    }
    switch (p.purpose) {
      case "allocate":
        this.fail(
          code === 401
            ? `TURN authentication failed (${reason}): check turn.username and turn.password`
            : `TURN Allocate refused: ${reason}`,
          code === 401,
        );
        return;
      case "refresh":
        this.fail(`TURN allocation lost: Refresh refused (${reason})`, code === 401, true);
        return;
      case "permission":
        this.fail(`TURN CreatePermission refused: ${reason}`, code === 401, true);
        return;
      case "channel":
        this.channelRefused = true;
        this.events.push({ type: "no-channel", reason });
        return;
      case "deallocate":
        // 437: already gone. Either way it is over.
        this.finishClose(code === 437);
        return;
    }
  }

  private succeeded(p: Pending, m: StunMessage, now: number): void {
    switch (p.purpose) {
      case "allocate": {
        const relayed = attrAddress(m, Attr.xorRelayedAddress, true);
        if (!relayed) {
          this.fail("TURN Allocate answer without XOR-RELAYED-ADDRESS", false);
          return;
        }
        this.relayed = relayed;
        this.mapped = attrAddress(m, Attr.xorMappedAddress, true) ?? null;
        this.lifetime = attrU32(m, Attr.lifetime) ?? 600;
        this.state = "allocated";
        this.scheduleRefresh(now);
        this.events.push({
          type: "allocated",
          relayed,
          ...(this.mapped ? { mapped: this.mapped } : {}),
          lifetime: this.lifetime,
        });
        this.request("permission", true, now);
        this.request("channel", true, now);
        return;
      }
      case "refresh": {
        this.lifetime = attrU32(m, Attr.lifetime) ?? this.lifetime;
        this.counters.refreshes++;
        if (this.lifetime === 0) {
          this.fail("TURN allocation lost: refreshed to lifetime 0", false, true);
          return;
        }
        this.scheduleRefresh(now);
        this.events.push({ type: "refreshed", lifetime: this.lifetime });
        return;
      }
      case "permission":
        if (!this.permitted) {
          this.permitted = true;
          this.events.push({ type: "permitted" });
        }
        this.permissionAt = now + (this.opts.permissionRefreshSec ?? 120) * 1000;
        return;
      case "channel":
        if (this.channel === 0) {
          this.channel = this.channelWanted;
          // ChannelBind installs the permission too.
          this.permitted = true;
          this.events.push({ type: "channel", channel: this.channel });
        }
        return;
      case "deallocate":
        this.finishClose(true);
        return;
    }
  }

  private scheduleRefresh(now: number): void {
    const life = this.lifetime * 1000;
    // A minute before the end, or half-way for short lifetimes.
    this.refreshAt = now + Math.max(life / 2, life - 60_000);
  }

  private timedOut(p: Pending): void {
    switch (p.purpose) {
      case "allocate":
        this.fail("no answer from the TURN server", false);
        return;
      case "refresh":
      case "permission":
        this.fail(`TURN allocation lost: no answer to ${p.purpose}`, false, true);
        return;
      case "channel":
        this.channelRefused = true;
        this.events.push({ type: "no-channel", reason: "no answer" });
        return;
      case "deallocate":
        this.finishClose(false);
        return;
    }
  }

  private fail(reason: string, auth: boolean, lost = false): void {
    if (this.state === "failed" || this.state === "closed") return;
    this.state = "failed";
    this.tx.clear();
    this.refreshAt = this.permissionAt = this.closeBy = Infinity;
    this.events.push({ type: "failed", reason, auth, lost });
  }

  private finishClose(confirmed: boolean): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.tx.clear();
    this.closeBy = Infinity;
    this.events.push({ type: "deallocated", confirmed });
  }
}

function findData(m: StunMessage): Uint8Array | null {
  for (const a of m.attributes) if (a.type === Attr.data) return a.value;
  return null;
}
