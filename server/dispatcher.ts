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
import { MIN_PACKET_LENGTH, PacketCodec, unmaskSessionId } from "../shared/wire/packet.ts";

/** Where a datagram came from and how to answer it. */
export interface Peer {
  /** Address of the sender. */
  addr: Deno.NetAddr;
  /** Sends a datagram back out of the socket it arrived on. */
  send(data: Uint8Array, to: Deno.NetAddr): void;
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
  addr: Deno.NetAddr;
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

/** Key of an address in maps. */
export function addrKey(a: Deno.NetAddr): string {
  return `${a.hostname}|${a.port}`;
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

  private keys: KeyEntry[];
  private readonly sessions = new Map<number, ServerSession>();
  private readonly byAddr = new Map<string, ServerSession>();
  private readonly replay: ReplayCache;
  private handshakeTokens: TokenBucket;
  /** Key trials (one HMAC each) per second: bounds the work junk can cause with many keys. */
  private readonly trialTokens: TokenBucket;
  private readonly wallClock: () => number;
  private readonly params: HelloParams;

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
      for (let k = 0; k < this.keys.length; k++) {
        const sid = unmaskSessionId(this.keys[k].masker, data);
        const s = this.sessions.get(sid);
        if (!s || s.key !== this.keys[k] || s === known) continue;
        const r = s.conn.receive(data);
        if (r === Receive.DROPPED) continue;
        s.established = true;
        if (r === Receive.ACCEPTED_HIGHEST) this.considerMove(s, peer, key);
        return;
      }
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
      if (this.sessions.size >= this.opts.maxSessions) {
        this.drops.sessionCap++;
        return;
      }
      this.replay.add(hello.ephemeral, now);
      this.accept(k, hello, peer, key);
      return;
    }
    this.drops.unauthenticated++;
  }

  private accept(
    k: number,
    hello: NonNullable<ReturnType<typeof readClientHelloFrom>>,
    peer: Peer,
    key: string,
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
      addr: peer.addr,
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
    peer.send(datagram, peer.addr);
    // Arm the session's timers now: a Connection only schedules its idle timeout
    // from flush(), so a client that never sends a data packet would otherwise
    // hold its table slot forever.
    conn.flush();
    const refused = this.admit(s);
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
    for (const s of [...this.sessions.values()]) s.conn.close(code, reason);
  }
}

function keyEntry(raw: Uint8Array): KeyEntry {
  const secrets = deriveSecrets(raw);
  return { raw: raw.slice(), secrets, masker: new Masker(secrets.obfsKey) };
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
