/**
 * The data plane of one worker thread (docs/workers.md): its own sockets on
 * the shared ports (`SO_REUSEPORT`), a dispatcher whose new sessions are
 * reserved with the main thread, the sessions with their TCP and UDP relays,
 * counters batched to the main thread, and the datagrams of other workers'
 * sessions forwarded to them. `worker_main.ts` runs it; tests may drive it
 * through its `post` function and {@link WorkerNode.receive}.
 * @module
 */

import { formatHostPort } from "../shared/config/types.ts";
import { getLog, setupLogging } from "../shared/log.ts";
import type { ServerConfig } from "../shared/config/types.ts";
import { mappingPolicyForKey } from "./mappings.ts";
import { CloseCode } from "../shared/session/session.ts";
import { createDirectDialer } from "../shared/net/direct.ts";
import { type Endpoint, formatEndpoint } from "../shared/carrier/carrier.ts";
import { udpEndpoint, UdpListener } from "../shared/carrier/udp.ts";
import { trafficStats } from "../shared/events.ts";
import "../ffi/udp_linux.ts";
import {
  Dispatcher,
  type HelloReservation,
  type Peer,
  type ReservationAnswer,
  type ServerSession,
} from "./dispatcher.ts";
import type { RelayStats } from "./relay.ts";
import { newUdpRelayStats, type UdpRelay, type UdpRelayStats } from "./udp_relay.ts";
import { EgressPolicy } from "./egress.ts";
import { createEgressDialer } from "./egress_dialer.ts";
import { closeDataPlane, serveSession, type SessionServices } from "./session_services.ts";
import { keyHex } from "./users.ts";
import { CounterBatch, EAGER_COUNTER_BYTES } from "./counter_batch.ts";
import { ForwardBatch, readForwards } from "./forwarding.ts";
import type {
  ForwardMessage,
  FromWorker,
  PolicyInputs,
  ToWorker,
  WorkerInit,
  WorkerStats,
} from "./worker_protocol.ts";

const log = getLog("server");

/** How often counters go to the main thread, ms. */
export const COUNTER_INTERVAL_MS = 200;
/** How often a snapshot goes to the main thread, ms. */
export const SNAPSHOT_INTERVAL_MS = 1000;

/** Posts a message to the main thread (with buffers to transfer). */
export type PostToMain = (m: FromWorker, transfer?: Transferable[]) => void;

/** One worker's sockets, dispatcher and sessions. */
export class WorkerNode {
  private index = -1;
  private dispatcher: Dispatcher | null = null;
  private readonly sockets: UdpListener[] = [];
  /** One reply path per socket (its `addr` is set per datagram). */
  private readonly peers: Peer[] = [];
  private readonly loops: Promise<void>[] = [];
  private readonly bySid = new Map<number, ServerSession>();
  private readonly keyOf = new Map<ServerSession, string>();
  /** Sessions of other workers: id → owner. */
  private readonly routes = new Map<number, number>();
  private readonly ports = new Map<number, MessagePort>();
  private readonly outgoing = new Map<number, ForwardBatch>();
  private forwardQueued = false;
  /** True while forwarded datagrams are handled (they are never forwarded again). */
  private inForward = false;
  private forwarded = 0;
  private forwardedIn = 0;
  private readonly counters = new CounterBatch();
  private readonly pending = new Map<number, (a: ReservationAnswer) => void>();
  private nextId = 1;
  private policy: EgressPolicy = new EgressPolicy();
  /** The configuration in force (init, then each reload). */
  private config: ServerConfig | null = null;
  private readonly relayStats: RelayStats = { opened: 0, failed: 0, bytesUp: 0, bytesDown: 0 };
  private readonly udpStats: UdpRelayStats = newUdpRelayStats();
  private readonly udpRelays = new Set<UdpRelay>();
  private egressDeniedTcp = 0;
  private timers: ReturnType<typeof setInterval>[] = [];
  private stopping = false;
  /** Address objects of forwarded sources, reused per address. */
  private readonly addrCache = new Map<string, Deno.NetAddr>();

  /** `post` sends to the main thread. */
  constructor(private readonly post: PostToMain) {}

  /** Handles one message from the main thread. */
  receive(m: ToWorker): void {
    switch (m.type) {
      case "init":
        void this.init(m);
        return;
      case "reserved": {
        const done = this.pending.get(m.id);
        this.pending.delete(m.id);
        done?.(m.answer);
        return;
      }
      case "routes":
        for (const [sid, owner] of m.add) if (owner !== this.index) this.routes.set(sid, owner);
        for (const sid of m.remove) this.routes.delete(sid);
        return;
      case "peer":
        this.addPeer(m.index, m.port);
        return;
      case "close":
        this.bySid.get(m.sid)?.conn.close(m.code, m.reason);
        return;
      case "keys":
        this.dispatcher?.updateKeys([...m.keys], m.code, m.reason);
        return;
      case "limits":
        this.dispatcher?.updateLimits({
          maxSessions: Number.MAX_SAFE_INTEGER,
          handshakeRate: m.handshakeRate,
          handshakeBurst: m.handshakeBurst,
        });
        return;
      case "policy":
        this.policy = buildPolicy(m.policy);
        return;
      case "config":
        this.config = m.config;
        return;
      case "snapshot":
        this.postCounters();
        this.post({ type: "snapshot", id: m.id, stats: this.stats() });
        return;
      case "stop":
        void this.stop(m.code, m.reason);
        return;
      case "fail":
        setTimeout(() => {
          throw new Error(m.reason);
        });
        return;
    }
  }

  private async init(m: WorkerInit): Promise<void> {
    this.index = m.index;
    const cfg = m.config;
    this.config = cfg;
    await setupLogging(cfg.log);
    this.policy = buildPolicy(m.policy);
    for (const [sid, owner] of m.routes) if (owner !== this.index) this.routes.set(sid, owner);
    const dialer = createEgressDialer(
      createDirectDialer({ connectTimeoutMs: cfg.connectTimeout * 1000 }),
      {
        policy: () => this.policy,
        onDenied: (target, reason, rule) => {
          this.egressDeniedTcp++;
          log.debug("egress refused {target} ({rule}): {reason}", {
            target: formatHostPort(target),
            rule,
            reason,
          });
        },
      },
    );
    const services: SessionServices = {
      dialer,
      relayStats: this.relayStats,
      udpStats: this.udpStats,
      udpRelays: this.udpRelays,
      policy: () => this.policy,
      mappings: (hex) => mappingPolicyForKey(this.config!, hex),
    };
    const d = new Dispatcher({
      keys: [...m.keys],
      // The control plane enforces the cap over all workers.
      maxSessions: Number.MAX_SAFE_INTEGER,
      handshakeRate: cfg.handshakeRate,
      handshakeBurst: cfg.handshakeBurst,
      replayWindowMs: cfg.replayWindow * 1000,
      replayCacheSize: cfg.replayCacheSize,
      session: {
        idleTimeout: cfg.idleTimeout * 1000,
        keepalive: Math.min(25_000, (cfg.idleTimeout * 1000) / 3),
        maxStreams: cfg.maxStreamsPerSession,
        maxDatagramSize: cfg.mtu,
      },
    });
    this.dispatcher = d;
    d.reserve = (r) => this.reserve(r);
    d.onReservationUnused = (sid) => this.post({ type: "released", sid });
    d.forward = (sid, data, peer) => this.forward(sid, data, peer);
    d.onSession = (s) => {
      const k = keyHex(s.key.raw);
      this.bySid.set(s.id, s);
      this.keyOf.set(s, k);
      this.post({
        type: "opened",
        sid: s.id,
        keyHex: k,
        address: fmt(s.addr),
        createdAt: s.createdAt,
      });
      serveSession(
        s.conn,
        services,
        (up, down) => {
          this.counters.bytes(k, up, down);
          if (this.counters.pendingBytes >= EAGER_COUNTER_BYTES) this.postCounters();
        },
        () => this.counters.stream(k),
        undefined,
        {
          keyHex: k,
          log: (message: string) =>
            log.info("session {id}: {message}", { id: s.id.toString(16), message }),
        },
      );
    };
    d.onSessionClosed = (s, reason) => {
      this.bySid.delete(s.id);
      this.keyOf.delete(s);
      // The main thread logs it (once, with the user), as with one worker.
      this.postCounters();
      this.post({ type: "closed", sid: s.id, reason });
    };
    try {
      for (const hp of cfg.listen) {
        const sock = UdpListener.open(hp.host, hp.port, { reusePort: true });
        this.sockets.push(sock);
      }
    } catch (e) {
      for (const s of this.sockets.splice(0)) s.close();
      this.post({
        type: "failed",
        error: (e as Error).message,
        addrInUse: e instanceof Deno.errors.AddrInUse,
      });
      return;
    }
    for (const sock of this.sockets) {
      // `addr` is set per datagram, before the dispatcher reads it.
      const peer: Peer = { addr: null!, send: (data, to) => sock.send(data, to) };
      this.peers.push(peer);
      this.loops.push(sock.run((data, from) => {
        peer.addr = from;
        try {
          d.handle(data, peer);
        } catch (e) {
          log.error("dispatcher failure: {error}", { error: String(e) });
        }
      }));
    }
    this.timers.push(setInterval(() => this.postCounters(), COUNTER_INTERVAL_MS));
    this.timers.push(
      setInterval(
        () => this.post({ type: "snapshot", id: 0, stats: this.stats() }),
        SNAPSHOT_INTERVAL_MS,
      ),
    );
    this.post({
      type: "ready",
      addresses: this.sockets.map((s) => ({ hostname: s.local.hostname, port: s.local.port })),
      fds: this.sockets.flatMap((s) => s.socket.fd === undefined ? [] : [s.socket.fd]),
    });
  }

  private reserve(r: HelloReservation): Promise<ReservationAnswer> {
    const id = this.nextId++;
    const { promise, resolve } = Promise.withResolvers<ReservationAnswer>();
    this.pending.set(id, resolve);
    this.post({
      type: "reserve",
      id,
      sid: r.sessionId,
      ephemeral: r.ephemeral,
      keyHex: keyHex(r.key),
      address: fmt(r.address),
    });
    return promise;
  }

  private addPeer(index: number, port: MessagePort): void {
    this.ports.get(index)?.close();
    this.ports.set(index, port);
    this.outgoing.delete(index);
    port.onmessage = (e: MessageEvent<ForwardMessage>) => this.receiveForwards(e.data);
  }

  /** The dispatcher's forward hook: packs the datagram for its owner. */
  private forward(sid: number, data: Uint8Array, peer: Peer): boolean {
    if (this.inForward) return false;
    const owner = this.routes.get(sid);
    if (owner === undefined || !this.ports.has(owner)) return false;
    const listener = this.peers.indexOf(peer);
    if (listener < 0) return false;
    let batch = this.outgoing.get(owner);
    if (!batch) this.outgoing.set(owner, batch = new ForwardBatch());
    if (peer.addr.carrier !== "udp" || !batch.add(listener, peer.addr.address, data)) return false;
    this.forwarded++;
    if (!this.forwardQueued) {
      // One message per target at the end of this receive batch.
      this.forwardQueued = true;
      queueMicrotask(this.sendForwards);
    }
    return true;
  }

  private readonly sendForwards = (): void => {
    this.forwardQueued = false;
    for (const [owner, batch] of this.outgoing) {
      if (batch.count === 0) continue;
      const port = this.ports.get(owner);
      const { buffer, length } = batch.take();
      const m: ForwardMessage = { type: "forward", buffer, length };
      port?.postMessage(m, [buffer]);
    }
  };

  private receiveForwards(m: ForwardMessage): void {
    const d = this.dispatcher;
    if (!d || m?.type !== "forward" || !(m.buffer instanceof ArrayBuffer)) return;
    this.inForward = true;
    try {
      readForwards(m.buffer, m.length, (listener, hostname, port, data) => {
        const peer = this.peers[listener];
        if (!peer) return;
        this.forwardedIn++;
        peer.addr = udpEndpoint(this.addressOf(hostname, port));
        try {
          d.handle(data, peer);
        } catch (e) {
          log.error("dispatcher failure: {error}", { error: String(e) });
        }
      });
    } finally {
      this.inForward = false;
    }
  }

  private addressOf(hostname: string, port: number): Deno.NetAddr {
    const k = `${hostname}|${port}`;
    let a = this.addrCache.get(k);
    if (!a) {
      if (this.addrCache.size > 4096) this.addrCache.clear();
      this.addrCache.set(k, a = { transport: "udp", hostname, port });
    }
    return a;
  }

  private postCounters(): void {
    if (this.counters.empty) return;
    this.post({ type: "counters", rows: this.counters.take() });
  }

  /** This worker's counters now. */
  stats(): WorkerStats {
    const d = this.dispatcher;
    const live = d ? [...d.allSessions()] : [];
    let busiest = 0;
    for (const s of live) {
      const st = s.conn.session.stats;
      busiest = Math.max(busiest, st.bytesSent + st.bytesReceived);
    }
    return {
      index: this.index,
      traffic: trafficStats(live.map((s) => s.conn.session), 0),
      busiestVolume: busiest,
      drops: d ? { ...d.drops } : {
        unauthenticated: 0,
        replayedHandshake: 0,
        staleTimestamp: 0,
        rateLimited: 0,
        sessionCap: 0,
        idCollision: 0,
      },
      handshakes: d?.handshakes ?? 0,
      migrations: live.reduce((n, s) => n + s.migrations, 0),
      egressDeniedTcp: this.egressDeniedTcp,
      relay: { ...this.relayStats },
      udp: { ...this.udpStats },
      forwarded: this.forwarded,
      forwardedIn: this.forwardedIn,
      sessions: live.map((s) => {
        const sess = s.conn.session;
        return {
          sid: s.id,
          address: fmt(s.addr),
          rttMs: Math.round(sess.rtt.smoothed * 10) / 10,
          bytesSent: sess.stats.bytesSent,
          bytesReceived: sess.stats.bytesReceived,
          streams: sess.streamCount,
          createdAt: s.createdAt,
          migrations: s.migrations,
        };
      }),
    };
  }

  private async stop(code: number, reason: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    await closeDataPlane(
      {
        dispatcher: this.dispatcher,
        udpRelays: this.udpRelays,
        listeners: this.sockets,
        loops: this.loops,
      },
      code || CloseCode.SHUTDOWN,
      reason,
    );
    this.postCounters();
    for (const p of this.ports.values()) p.close();
    this.post({ type: "stopped" });
  }
}

function buildPolicy(p: PolicyInputs): EgressPolicy {
  return new EgressPolicy({ allow: p.allow, deny: p.deny, self: p.self });
}

function fmt(a: Deno.NetAddr | Endpoint): string {
  return "key" in a ? formatEndpoint(a) : formatHostPort({ host: a.hostname, port: a.port });
}
