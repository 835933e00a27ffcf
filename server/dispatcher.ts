/**
 * The server's datagram dispatcher: finds the session of every datagram by its
 * masked id in O(1), accepts handshakes within the trial rate limit with
 * timestamp and replay checks, moves sessions on authenticated new-highest
 * packets only (roaming), and drops everything else silently, counting why.
 * @module
 */

import { deriveSecrets, type KeySecrets, Masker, toHex } from "../shared/crypto/keys.ts";
import { Connection } from "../shared/session/connection.ts";
import {
  buildServerHello,
  type HelloParams,
  readClientHelloFrom,
} from "../shared/session/handshake.ts";
import { CloseCode, Receive, Session, type SessionConfig } from "../shared/session/session.ts";
import { decodeHandshakeDatagram, ReplayCache } from "../shared/wire/handshake.ts";
import { TokenBucket } from "./token_bucket.ts";
import type { Endpoint } from "../shared/carrier/carrier.ts";
import { MIN_PACKET_LENGTH, PacketCodec, unmaskSessionId } from "../shared/wire/packet.ts";

/** Where a datagram came from and how to answer it. */
export interface Peer {
  /** The sender's path (a carrier endpoint: UDP address, fake-TCP flow, TLS connection). */
  addr: Endpoint;
  /** Sends a datagram back out of the carrier it arrived on. */
  send(data: Uint8Array, to: Endpoint): void;
}

/** Why datagrams were dropped without a reply. */
export interface DropCounters {
  /** Not a packet of any session and not an authentic handshake under any key. */
  unauthenticated: number;
  /** Authentic handshake already seen (replay) from another address or after use. */
  replayedHandshake: number;
  /** Authentic handshake outside the ±window timestamp check. */
  staleTimestamp: number;
  /** Handshake trial refused by the token bucket. */
  rateLimited: number;
  /** New session refused because the table is full. */
  sessionCap: number;
  /** Session id already taken by another handshake. */
  idCollision: number;
}

/** A hello that passed a worker's own checks, to be reserved with the control plane. */
export interface HelloReservation {
  /** The session id the client chose. */
  readonly sessionId: number;
  /** The client's ephemeral key (replay cache key; a copy). */
  readonly ephemeral: Uint8Array;
  /** The access key it authenticated with (never logged). */
  readonly key: Uint8Array;
  /** Where it came from. */
  readonly address: Deno.NetAddr;
}

/**
 * The control plane's answer to a {@link HelloReservation}: accept (and, with
 * a `refused` reason, close at once with {@link CloseCode.LIMIT_REACHED}), or
 * drop silently, counted under `counter`.
 */
export type ReservationAnswer =
  | { readonly kind: "ok"; readonly refused: string | null }
  | { readonly kind: "drop"; readonly counter: keyof DropCounters };

/** Settings of the dispatcher. */
export interface DispatcherOptions {
  keys: Uint8Array[];
  maxSessions: number;
  handshakeRate: number;
  handshakeBurst: number;
  replayWindowMs: number;
  replayCacheSize: number;
  session: Partial<SessionConfig>;
  /** Key-trial budget per second (default {@link KEY_TRIALS_PER_SECOND}). */
  keyTrialsPerSecond?: number;
  /** Wall clock for handshake timestamps (injectable for tests). */
  wallClock?: () => number;
}

/** One live session on the server. */
export interface ServerSession {
  readonly id: number;
  /** Index of the session's key in the key list it was accepted under. */
  keyIndex: number;
  /** The key entry itself (survives reloads that reorder keys). */
  readonly key: KeyEntry;
  readonly conn: Connection;
  /** The path the session's packets go to (it moves when the client roams or changes carrier). */
  addr: Endpoint;
  addrKey: string;
  peer: Peer;
  readonly createdAt: number;
  readonly helloEphemeral: Uint8Array;
  readonly helloReply: Uint8Array;
  established: boolean;
  /** Times the session moved to a new address. */
  migrations: number;
  /** Address that sent the latest new-highest packets from elsewhere, and how many in a row. */
  candidateKey: string;
  candidateCount: number;
}

/**
 * Key trials per second the server spends on datagrams that match no session
 * (each trial is one HMAC of the hello framing check, about 5 µs): about a
 * quarter of a core. With 1,000 keys this admits 50 unknown hellos per second;
 * with one key it never binds.
 */
export const KEY_TRIALS_PER_SECOND = 50_000;

/** New-highest authenticated packets in a row from a new address before a session moves there. */
export const ROAM_CONFIRMATIONS = 2;

/** One access key's cached secrets. */
export interface KeyEntry {
  /** The key bytes (kept to match keys across reloads; never logged). */
  readonly raw: Uint8Array;
  readonly secrets: KeySecrets;
  readonly masker: Masker;
}

/** Key of an endpoint in maps. */
export function addrKey(a: Endpoint): string {
  return a.key;
}

/** Session table plus handshake acceptance. */
export class Dispatcher {
  /** Drop counters, by reason. */
  readonly drops: DropCounters = {
    unauthenticated: 0,
    replayedHandshake: 0,
    staleTimestamp: 0,
    rateLimited: 0,
    sessionCap: 0,
    idCollision: 0,
  };
  /** Handshakes accepted. */
  handshakes = 0;
  /** Called with each new session (attach stream handlers here). */
  onSession: (s: ServerSession) => void = () => {};
  /**
   * Asked after a hello was accepted and answered: a reason string closes the
   * new session at once with {@link CloseCode.LIMIT_REACHED} and that reason
   * (the client authenticated, so it may learn why), null admits it.
   */
  admit: (s: ServerSession) => string | null = () => null;
  /** Called when a session ended. */
  onSessionClosed: (s: ServerSession, reason: string) => void = () => {};
  /**
   * Worker threads (docs/workers.md) set this: a hello that passed the local
   * checks (framing, Noise, timestamp, this worker's replay cache and table)
   * is reserved with the control plane, which owns the one replay cache, the
   * session cap and the admission; the session is accepted when the answer
   * says so. Repeats of a hello whose answer is pending are ignored. Null
   * (the default, one thread): all of that is local and synchronous.
   */
  reserve: ((r: HelloReservation) => Promise<ReservationAnswer>) | null = null;
  /** Told a reservation answered "ok" that was not used (key removed meanwhile, closed). */
  onReservationUnused: (sessionId: number) => void = () => {};
  /**
   * Worker threads set this: asked with the id a datagram of no local session
   * unmasks to (under some key); true if it was forwarded to the worker that
   * owns that session (then nothing else is done with it here).
   */
  forward: ((sessionId: number, data: Uint8Array, peer: Peer) => boolean) | null = null;

  private keys: KeyEntry[];
  private readonly sessions = new Map<number, ServerSession>();
  private readonly byAddr = new Map<string, ServerSession>();
  private readonly replay: ReplayCache;
  private handshakeTokens: TokenBucket;
  /** Key trials (one HMAC each) per second: bounds the work junk can cause with many keys. */
  private readonly trialTokens: TokenBucket;
  private readonly wallClock: () => number;
  private readonly params: HelloParams;
  /** Hellos (by ephemeral, hex) whose reservation is pending, with their address key. */
  private readonly pendingHellos = new Map<string, string>();
  private closedAll = false;

  constructor(private readonly opts: DispatcherOptions) {
    this.keys = opts.keys.map(keyEntry);
    this.replay = new ReplayCache({
      capacity: opts.replayCacheSize,
      windowMs: 2 * opts.replayWindowMs,
    });
    this.handshakeTokens = new TokenBucket(opts.handshakeRate, opts.handshakeBurst);
    const trials = opts.keyTrialsPerSecond ?? KEY_TRIALS_PER_SECOND;
    this.trialTokens = new TokenBucket(trials, 2 * trials);
    this.wallClock = opts.wallClock ?? Date.now;
    const cfg = { ...opts.session };
    this.params = {
      maxData: cfg.maxData ?? 32 * 1024 * 1024,
      maxStreamData: cfg.maxStreamData ?? 8 * 1024 * 1024,
      maxStreams: cfg.maxStreams ?? 8192,
      maxDatagramSize: cfg.maxDatagramSize ?? 1350,
    };
  }

  /** Live sessions. */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Iterates live sessions. */
  allSessions(): IterableIterator<ServerSession> {
    return this.sessions.values();
  }

  /** Entries in the handshake replay cache. */
  get replayCacheSize(): number {
    return this.replay.size;
  }

  /**
   * True when `data` looks like a client's: a hello framed under one of the
   * keys (one HMAC per key, no Noise work), or a packet whose masked session
   * id names a live session of its key (a session moving to a new stream
   * carrier). The stream carriers' admission check (`AdmitFirst`): a TLS
   * connection whose first frame fails it goes to the fallback web server.
   * Spends key-trial tokens like {@link handle}; never throws.
   */
  recognizes(data: Uint8Array): boolean {
    if (this.keys.length > 1 && !this.trialTokens.take(this.keys.length)) return false;
    for (let k = 0; k < this.keys.length; k++) {
      const entry = this.keys[k];
      if (data.length >= MIN_PACKET_LENGTH) {
        const s = this.sessions.get(unmaskSessionId(entry.masker, data));
        if (s && s.key === entry) return true;
      }
      if (decodeHandshakeDatagram(entry.masker, data)) return true;
    }
    return false;
  }

  /** Handles one datagram. Never throws for any input. */
  handle(data: Uint8Array, peer: Peer): void {
    const key = addrKey(peer.addr);
    // Fast path: the session last seen at this address.
    const known = this.byAddr.get(key);
    if (known) {
      const r = known.conn.receive(data);
      if (r !== Receive.DROPPED) {
        known.established = true;
        if (r === Receive.ACCEPTED_HIGHEST && known.addrKey === key) known.candidateCount = 0;
        return;
      }
    }
    if (data.length >= MIN_PACKET_LENGTH) {
      const forward = this.forward;
      let remote = -1;
      for (let k = 0; k < this.keys.length; k++) {
        const sid = unmaskSessionId(this.keys[k].masker, data);
        const s = this.sessions.get(sid);
        if (!s) {
          if (forward !== null && remote < 0) remote = sid;
          continue;
        }
        if (s.key !== this.keys[k] || s === known) continue;
        const r = s.conn.receive(data);
        if (r === Receive.DROPPED) continue;
        s.established = true;
        if (r === Receive.ACCEPTED_HIGHEST) this.considerMove(s, peer, key);
        return;
      }
      // Another worker's session (its client's new 4-tuple hashed here): hand it over.
      if (remote >= 0 && forward!(remote, data, peer)) return;
    }
    this.tryHandshake(data, peer, key);
  }

  /**
   * Roaming (PROTOCOL.md A4, made stricter): a session moves only after
   * {@link ROAM_CONFIRMATIONS} authenticated new-highest packets in a row from
   * the same new address. A single captured packet that the server never got,
   * replayed from elsewhere, therefore moves nothing; a client that really
   * moved confirms within one more packet (its next ack or probe).
   */
  private considerMove(s: ServerSession, peer: Peer, key: string): void {
    if (key === s.addrKey) {
      s.candidateCount = 0;
      return;
    }
    if (s.candidateKey === key) s.candidateCount++;
    else {
      s.candidateKey = key;
      s.candidateCount = 1;
    }
    if (s.candidateCount >= ROAM_CONFIRMATIONS) {
      s.candidateCount = 0;
      this.move(s, peer, key);
    }
  }

  private move(s: ServerSession, peer: Peer, key: string): void {
    if (this.byAddr.get(s.addrKey) === s) this.byAddr.delete(s.addrKey);
    s.addr = peer.addr;
    s.addrKey = key;
    s.peer = peer;
    s.migrations++;
    this.byAddr.set(key, s);
  }

  private tryHandshake(data: Uint8Array, peer: Peer, key: string): void {
    if (this.keys.length > 1 && !this.trialTokens.take(this.keys.length)) {
      this.drops.rateLimited++;
      return;
    }
    // Each key unmasks once (one HMAC). Only a datagram framed like a hello
    // under some key spends a handshake token, so junk does not use up the
    // tokens genuine clients need; the Noise read runs only for framed keys.
    let tokenTaken = false;
    for (let k = 0; k < this.keys.length; k++) {
      const { secrets, masker } = this.keys[k];
      const dec = decodeHandshakeDatagram(masker, data);
      if (!dec) continue;
      if (!tokenTaken) {
        if (!this.handshakeTokens.take()) {
          this.drops.rateLimited++;
          return;
        }
        tokenTaken = true;
      }
      const hello = readClientHelloFrom(secrets, dec);
      if (!hello) continue;
      const wall = this.wallClock();
      if (Math.abs(hello.timestamp - wall) > this.opts.replayWindowMs) {
        this.drops.staleTimestamp++;
        return;
      }
      const now = performance.now();
      if (this.replay.has(hello.ephemeral, now)) {
        // A client whose answer was lost repeats message 1: same answer, same address only.
        const s = this.sessions.get(hello.sessionId);
        if (s && !s.established && s.addrKey === key && equal(s.helloEphemeral, hello.ephemeral)) {
          peer.send(s.helloReply, peer.addr);
        } else {
          this.drops.replayedHandshake++;
        }
        return;
      }
      if (this.sessions.has(hello.sessionId)) {
        this.drops.idCollision++;
        return;
      }
      if (this.reserve !== null) {
        this.reserveThenAccept(this.keys[k], hello, peer, key);
        return;
      }
      if (this.sessions.size >= this.opts.maxSessions) {
        this.drops.sessionCap++;
        return;
      }
      this.replay.add(hello.ephemeral, now);
      this.accept(k, hello, peer, peer.addr, key);
      return;
    }
    this.drops.unauthenticated++;
  }

  /** Worker mode: asks {@link reserve}, then accepts (or drops) as the answer says. */
  private reserveThenAccept(
    entry: KeyEntry,
    hello: AcceptedHello,
    peer: Peer,
    key: string,
  ): void {
    const pendingKey = toHex(hello.ephemeral);
    const from = this.pendingHellos.get(pendingKey);
    if (from !== undefined) {
      // A repeat while the answer is pending: ignored from the same address, a replay from another.
      if (from !== key) this.drops.replayedHandshake++;
      return;
    }
    this.pendingHellos.set(pendingKey, key);
    // The peer object is shared by every datagram of its socket: keep this one's address.
    const addr = peer.addr;
    const sid = hello.sessionId;
    this.reserve!({
      sessionId: sid,
      ephemeral: hello.ephemeral,
      key: entry.raw,
      address: addr.address,
    })
      .then((a) => {
        this.pendingHellos.delete(pendingKey);
        if (a.kind === "drop") {
          this.drops[a.counter]++;
          return;
        }
        const k = this.keys.indexOf(entry);
        if (k < 0 || this.closedAll || this.sessions.has(sid)) {
          this.onReservationUnused(sid);
          return;
        }
        this.replay.add(hello.ephemeral, performance.now());
        this.accept(k, hello, peer, addr, key, a.refused);
      }, () => {
        this.pendingHellos.delete(pendingKey);
      });
  }

  private accept(
    k: number,
    hello: AcceptedHello,
    peer: Peer,
    addr: Endpoint,
    key: string,
    refusedBy?: string | null,
  ): void {
    const { secrets, masker } = this.keys[k];
    const mtu = Math.min(this.params.maxDatagramSize, hello.params.maxDatagramSize);
    const { datagram, keys } = buildServerHello(secrets, masker, hello, {
      ...this.params,
      maxDatagramSize: mtu,
    });
    const codec = new PacketCodec({
      sessionId: hello.sessionId,
      sendKey: keys.responderToInitiator,
      recvKey: keys.initiatorToResponder,
      masker,
    });
    const session = new Session({
      protector: codec,
      isClient: false,
      peer: hello.params,
      now: performance.now(),
      config: { ...this.opts.session, maxDatagramSize: mtu },
    });
    // The sender reads the session's current address at send time (roaming).
    const conn = new Connection(session, (d) => s.peer.send(d, s.addr));
    const s: ServerSession = {
      id: hello.sessionId,
      keyIndex: k,
      key: this.keys[k],
      conn,
      addr,
      addrKey: key,
      peer,
      createdAt: Date.now(),
      helloEphemeral: hello.ephemeral.slice(),
      helloReply: datagram,
      established: false,
      migrations: 0,
      candidateKey: "",
      candidateCount: 0,
    };
    this.sessions.set(s.id, s);
    this.byAddr.set(key, s);
    this.handshakes++;
    conn.closed.then((info) => {
      this.sessions.delete(s.id);
      if (this.byAddr.get(s.addrKey) === s) this.byAddr.delete(s.addrKey);
      this.onSessionClosed(s, info.reason);
    });
    this.onSession(s);
    peer.send(datagram, addr);
    // Arm the session's timers now: a Connection only schedules its idle timeout
    // from flush(), so a client that never sends a data packet would otherwise
    // hold its table slot forever.
    conn.flush();
    const refused = refusedBy !== undefined ? refusedBy : this.admit(s);
    if (refused !== null) conn.close(CloseCode.LIMIT_REACHED, refused);
  }

  /**
   * Replaces the access keys (hot reload). Sessions under keys that remain
   * keep running; sessions under removed keys are closed with `reason`.
   * Returns how many sessions were closed.
   */
  updateKeys(keys: Uint8Array[], code: number, reason: string): number {
    const old = new Map(this.keys.map((e) => [toHex(e.raw), e]));
    this.keys = keys.map((k) => old.get(toHex(k)) ?? keyEntry(k));
    const live = new Set(this.keys);
    let closed = 0;
    for (const s of [...this.sessions.values()]) {
      const idx = this.keys.indexOf(s.key);
      if (idx >= 0) {
        s.keyIndex = idx;
        continue;
      }
      if (!live.has(s.key)) {
        s.conn.close(code, reason);
        closed++;
      }
    }
    return closed;
  }

  /** Changes the limits that a reload may change. */
  updateLimits(
    limits: { maxSessions: number; handshakeRate: number; handshakeBurst: number },
  ): void {
    this.opts.maxSessions = limits.maxSessions;
    this.handshakeTokens = new TokenBucket(limits.handshakeRate, limits.handshakeBurst);
  }

  /** Number of access keys. */
  get keyCount(): number {
    return this.keys.length;
  }

  /** Closes every session with a reason. */
  closeAll(code: number, reason: string): void {
    this.closedAll = true;
    for (const s of [...this.sessions.values()]) s.conn.close(code, reason);
  }
}

type AcceptedHello = NonNullable<ReturnType<typeof readClientHelloFrom>>;

function keyEntry(raw: Uint8Array): KeyEntry {
  const secrets = deriveSecrets(raw);
  return { raw: raw.slice(), secrets, masker: new Masker(secrets.obfsKey) };
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
