/**
 * The OSTP server as an object: UDP listeners (IPv4 and IPv6, several at
 * once), the dispatcher, the TCP relay, counters and events. `server/main.ts`
 * runs it from the command line; `mod.ts` exports it for embedding.
 * @module
 */

import type { HostPort, ServerConfig, UserConfig } from "../shared/config/types.ts";
import { formatHostPort, isUnspecifiedHost } from "../shared/config/types.ts";
import { generateAccessKey } from "../shared/crypto/keys.ts";
import { encodeShareLink } from "../shared/link.ts";
import type { Dialer } from "../shared/duplex.ts";
import { Emitter, type TrafficStats, trafficStats } from "../shared/events.ts";
import { getLog } from "../shared/log.ts";
import { CloseCode } from "../shared/session/session.ts";
import { createDirectDialer } from "../shared/net/direct.ts";
import { reusePortAvailable } from "../shared/net/datagram.ts";
import { type CarrierListener, formatEndpoint } from "../shared/carrier/carrier.ts";
import { UdpListener } from "../shared/carrier/udp.ts";
import "../ffi/udp_linux.ts";
import { Dispatcher, type DropCounters, type Peer, type ServerSession } from "./dispatcher.ts";
import type { RelayStats } from "./relay.ts";
import { newUdpRelayStats, type UdpRelay, type UdpRelayStats } from "./udp_relay.ts";
import { closeDataPlane, serveSession, type SessionServices } from "./session_services.ts";
import { WorkerPool } from "./worker_pool.ts";
import type { PolicyInputs, WorkerStats } from "./worker_protocol.ts";
import { EgressPolicy, localAddresses, type Resolver, systemResolver } from "./egress.ts";
import { parseIp } from "../shared/net/cidr.ts";
import { createEgressDialer, ownAddresses } from "./egress_dialer.ts";
import { CounterStore } from "./store.ts";
import { mappingPolicyForKey } from "./mappings.ts";
import { type ApiBackend, ApiError, type SessionView, type UserView } from "./api.ts";
import denoJson from "../deno.json" with { type: "json" };
import {
  allowed,
  type ApiUserConfig,
  checkUserName,
  keyHex,
  type User,
  UserRegistry,
  type UserSnapshot,
  usersOf,
} from "./users.ts";

/** Events a server emits. */
export interface ServerEvents {
  [k: string]: unknown;
  /** Lifecycle: "starting" → "running" → "stopped". */
  state: { state: "starting" | "running" | "stopped" };
  /** A session was accepted or ended. */
  session: { type: "opened" | "closed"; id: number; address: string; reason?: string };
  /** Counters, every `statsIntervalMs`. */
  stats: ServerStats;
}

/** Server counters: traffic plus drops by reason, handshakes and migrations. */
export type ServerStats = TrafficStats & {
  drops: DropCounters;
  handshakes: number;
  /** Session moves to a new client address (roaming), summed over live sessions. */
  migrations: number;
  /** Targets the egress policy refused: TCP streams, and UDP relay datagrams. */
  egressDenied: { tcp: number; udp: number };
  /**
   * Datagrams a worker thread handed to the worker owning their session (a
   * roaming client hashed to another worker; docs/workers.md). 0 with one worker.
   */
  forwarded: number;
  /**
   * The listeners besides plain UDP (docs/carriers.md), with their own
   * counters where they keep some (FEC: recovered datagrams, ratio, loss).
   */
  carriers?: CarrierSummary[];
};

/** One carrier listener as `status` shows it. */
export interface CarrierSummary {
  /** The carrier ("faketcp", "uot", "tls", "udp+fec"). */
  kind: string;
  /** Its port. */
  port: number;
  /** Connections or flows it holds, where it counts them. */
  connections?: number;
  /** Its counters, where it keeps some. */
  counters?: Record<string, number | string>;
}

/** One worker thread's share, as `status` shows it. */
export interface WorkerSummary {
  /** Worker index (0 with one worker: the main thread). */
  index: number;
  /** Its live sessions. */
  sessions: number;
  /** Handshakes it accepted. */
  handshakes: number;
  /** Datagrams it forwarded to other workers. */
  forwarded: number;
  /** Its drop counters. */
  drops: DropCounters;
}

/** Options beyond the config file. */
export interface ServerOptions {
  /** Interval of `stats` events, ms (default 5000). */
  statsIntervalMs?: number;
  /**
   * Outbound dialer (default: direct TCP with the configured connect timeout).
   * The egress policy wraps it too: it is called with the checked address
   * literal of an allowed target, never for a refused one.
   */
  dialer?: Dialer;
  /** Name resolution for the egress check, TCP and UDP (default: the system resolver). */
  lookup?: Resolver;
  /**
   * The server's interface addresses, refused by the policy (default:
   * `localAddresses()`); asked when the policy is built and every
   * `ownAddressRefreshMs`.
   */
  interfaceAddresses?: () => string[];
  /**
   * How often the server's own addresses (interfaces, and a `publicAddress`
   * that is a name, resolved) are looked at again, ms; a change rebuilds the
   * egress policy. Default 30 000; 0: only at start and reload.
   */
  ownAddressRefreshMs?: number;
  /**
   * Worker threads running the sessions (docs/workers.md); overrides the
   * config's `workers`; neither set: 1, everything on the calling thread
   * (`ostp-server` passes one per core). More than 1 needs the Linux FFI UDP
   * socket (`SO_REUSEPORT`), and no injected `dialer` or `lookup` (functions
   * cannot cross into workers): otherwise 1, with a log line saying why.
   */
  workers?: number;
  /**
   * More carrier listeners to serve, besides those of the config (tests, an
   * embedding program's own carrier); the server runs and closes them. With
   * any, the server runs on one worker.
   */
  listeners?: CarrierListener[];
}

const log = getLog("server");

/** A running (or stopped) OSTP server. */
export class OstpServer {
  /** Subscribe to `state`, `session` and `stats`. */
  readonly events: Emitter<ServerEvents> = new Emitter();
  /** The dispatcher (session table and drop counters). */
  readonly dispatcher: Dispatcher;
  /** Relay counters. */
  readonly relayStats: RelayStats = { opened: 0, failed: 0, bytesUp: 0, bytesDown: 0 };
  /** UDP relay counters (SOCKS5 UDP ASSOCIATE flows of every session). */
  readonly udpStats: UdpRelayStats = newUdpRelayStats();
  private readonly udpRelays = new Set<UdpRelay>();
  /** Users (one per key) and their counters. */
  readonly users: UserRegistry;
  private store: CounterStore | null = null;
  /** Users created through the management API (stored when there is a state file). */
  private apiUsers: ApiUserConfig[] = [];
  private flushTimer: ReturnType<typeof setInterval> | undefined;
  private enforceTimer: ReturnType<typeof setInterval> | undefined;
  private enforceQueued = false;
  /** Key (hex) of every live session, to find its user. */
  private readonly sessionKeys = new WeakMap<ServerSession, string>();

  /** The UDP listeners (one per listen address). */
  private readonly sockets: UdpListener[] = [];
  /** Every carrier listener: the UDP ones, then the others (docs/carriers.md). */
  private readonly listeners: CarrierListener[] = [];
  private readonly dialer: Dialer;
  private readonly services: SessionServices;
  /** Worker threads in use (1: the in-process path, {@link dispatcher}). */
  readonly workerCount: number;
  /** The worker threads, when {@link workerCount} > 1 (after start). */
  private pool: WorkerPool | null = null;
  /** The layer-3 hub, when `l3` is configured. */
  private l3: import("./l3/l3_hub_mode.ts").L3HubMode | null = null;
  /** The inputs {@link policy} was built from (sent to worker threads). */
  private policyInputs: PolicyInputs = { allow: [], deny: [], self: [] };
  /**
   * The egress policy in force (rebuilt on {@link reload} and when the own
   * addresses change; asked per new stream and per UDP datagram).
   */
  private policy: EgressPolicy;
  /** The own addresses {@link policy} was built with (to see whether they changed). */
  private policySelf = "";
  /** The addresses a `publicAddress` that is a name resolved to, the last time it was resolved. */
  private publicResolved: { host: string; addresses: string[] } | null = null;
  private selfTimer: ReturnType<typeof setInterval> | undefined;
  /** A refresh of the own addresses is running (one at a time). */
  private refreshing: Promise<void> | null = null;
  /** Asked for again while {@link refreshing}: one more run follows. */
  private refreshAgain = false;
  /** TCP targets the egress policy refused. */
  private egressDeniedTcp = 0;
  private statsTimer: ReturnType<typeof setInterval> | undefined;
  private readonly startedAt = performance.now();
  private loops: Promise<void>[] = [];
  private stopping = false;

  constructor(config: ServerConfig, private readonly options: ServerOptions = {}) {
    this.current = config;
    let workers = Math.max(1, Math.floor(options.workers ?? config.workers ?? 1));
    if (workers > 1 && config.l3) {
      log.info(
        "running 1 worker, not {workers}: the layer-3 hub (l3) runs its sessions on one thread",
        { workers },
      );
      workers = 1;
    }
    const extraCarriers = (config.carriers && Object.keys(config.carriers).length > 0) ||
      (options.listeners?.length ?? 0) > 0;
    if (workers > 1 && extraCarriers) {
      log.info(
        "running 1 worker, not {workers}: the fake-TCP, UDP-over-TCP and TLS carriers run on " +
          "the main thread (docs/carriers.md)",
        { workers },
      );
      workers = 1;
    }
    if (workers > 1 && (options.dialer || options.lookup)) {
      log.info(
        "running 1 worker, not {workers}: an injected dialer or lookup function cannot cross " +
          "into worker threads",
        { workers },
      );
      workers = 1;
    } else if (workers > 1 && !reusePortAvailable()) {
      log.warn(
        "running 1 worker, not {workers}: worker threads share the UDP port with SO_REUSEPORT, " +
          "which needs the Linux FFI UDP socket (--allow-ffi, OSTP_UDP not deno)",
        { workers },
      );
      workers = 1;
    }
    this.workerCount = workers;
    this.policy = this.buildPolicy(config, this.interfaceAddresses());
    this.dialer = createEgressDialer(
      options.dialer ?? createDirectDialer({ connectTimeoutMs: config.connectTimeout * 1000 }),
      {
        policy: () => this.policy,
        lookup: options.lookup,
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
    this.services = {
      dialer: this.dialer,
      relayStats: this.relayStats,
      udpStats: this.udpStats,
      udpRelays: this.udpRelays,
      lookup: options.lookup,
      policy: () => this.policy,
      mappings: (hex) => mappingPolicyForKey(this.current, hex),
    };
    const users = usersOf(config);
    this.users = new UserRegistry(users);
    this.dispatcher = new Dispatcher({
      keys: users.map((u) => u.key),
      maxSessions: config.maxSessions,
      handshakeRate: config.handshakeRate,
      handshakeBurst: config.handshakeBurst,
      replayWindowMs: config.replayWindow * 1000,
      replayCacheSize: config.replayCacheSize,
      session: {
        idleTimeout: config.idleTimeout * 1000,
        keepalive: Math.min(25_000, (config.idleTimeout * 1000) / 3),
        maxStreams: config.maxStreamsPerSession,
        maxDatagramSize: config.mtu,
      },
    });
    this.dispatcher.onSession = (s) => this.onSession(s);
    this.dispatcher.admit = (s) => {
      const user = this.userOf(s);
      if (!user) return null;
      const why = allowed(user, Date.now());
      if (why) {
        log.info("session {id} of user {user} refused: {reason}", {
          id: hex(s.id),
          user: user.name,
          reason: why,
        });
      } else this.users.addSession(user);
      return why;
    };
    this.dispatcher.onSessionClosed = (s, reason) => {
      log.debug("session {id} closed: {reason}", { id: hex(s.id), reason });
      this.events.emit("session", { type: "closed", id: s.id, address: fmt(s.addr), reason });
    };
  }

  /** Addresses actually bound (ports resolved when 0 was asked for). */
  get addresses(): Deno.NetAddr[] {
    if (this.pool) return this.pool.addresses;
    return this.sockets.map((s) => s.local);
  }

  /** UDP implementation in use ("linux-ffi" or "deno"). */
  get socketKind(): string {
    if (this.pool) return this.pool.addresses.length > 0 ? "linux-ffi" : "none";
    return this.sockets[0]?.socket.kind ?? "none";
  }

  /**
   * Binds every listener and starts serving. With one worker everything is
   * done (and a failure thrown) before it returns; with more, await it: it
   * resolves once every worker listens, or rejects with the listener's error.
   */
  start(): Promise<void> {
    this.events.emit("state", { state: "starting" });
    if (this.current.stateFile !== null && !this.store) {
      try {
        this.store = new CounterStore(this.current.stateFile);
        this.users.load(this.store.load());
        this.apiUsers = this.store.loadUsers();
        this.applyUsers("access key removed");
      } catch (e) {
        this.store?.close();
        this.store = null;
        throw new Error(`state file ${this.current.stateFile}: ${(e as Error).message}`);
      }
    }
    if (this.workerCount > 1) return this.startPool();
    return this.startOneThread();
  }

  /** One worker: the layer-3 hub first (before any session can ask for it), then the listeners. */
  private async startOneThread(): Promise<void> {
    if (this.current.l3 && !this.l3) await this.startL3(this.current.l3);
    this.listen();
    try {
      await this.listenCarriers();
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  /** Opens the listeners of the carriers besides UDP (docs/carriers.md). */
  private async listenCarriers(): Promise<void> {
    const c = this.current.carriers;
    const opened = [...(this.options.listeners ?? [])];
    if (c) {
      const { openCarrierListeners } = await import("./carrier_listeners.ts");
      opened.push(
        ...await openCarrierListeners(c, {
          admit: (d: Uint8Array) => this.dispatcher.recognizes(d),
          stateDir: this.current.l3?.stateDir,
        }),
      );
    }
    for (const l of opened) {
      this.listeners.push(l);
      this.loops.push(this.receiveLoop(l));
      log.info("listening on {kind} {address}", {
        kind: l.kind,
        address: formatHostPort({ host: l.local.hostname, port: l.local.port }),
      });
    }
  }

  /** Brings the layer-3 hub up (docs/l3.md); the users' fixed addresses are never pooled. */
  private async startL3(cfg: NonNullable<ServerConfig["l3"]>): Promise<void> {
    const { L3HubMode } = await import("./l3/l3_hub_mode.ts");
    const fixed = usersOf(this.current).flatMap((u) => (u.address ? [u.address] : []));
    this.l3 = await L3HubMode.start(cfg, this.current.mtu, fixed);
  }

  /** Binds every listener (one worker: on this thread) and starts the timers. */
  private listen(): void {
    for (const hp of this.current.listen) {
      let sock: UdpListener;
      try {
        sock = UdpListener.open(hp.host, hp.port);
      } catch (e) {
        for (const s of this.sockets.splice(0)) s.close();
        this.listeners.splice(0);
        const hint = e instanceof Deno.errors.AddrInUse && this.current.listen.length > 1
          ? " ([::] also takes IPv4 on dual-stack systems: list either [::] or 0.0.0.0 for a port)"
          : "";
        throw new Error(`udp ${formatHostPort(hp)}: ${(e as Error).message}${hint}`);
      }
      this.sockets.push(sock);
      this.listeners.push(sock);
      this.loops.push(this.receiveLoop(sock));
      log.info("listening on udp {address} ({kind})", {
        kind: sock.socket.kind,
        address: formatHostPort({ host: hp.host, port: sock.local.port }),
      });
    }
    this.startTimers();
  }

  /** Starts the worker threads (docs/workers.md). */
  private async startPool(): Promise<void> {
    // A port another process holds: refused here, as one worker would be (SO_REUSEPORT
    // alone would join a group another server of this user holds).
    for (const hp of this.current.listen) {
      if (hp.port === 0) continue;
      try {
        Deno.listenDatagram({ transport: "udp", hostname: hp.host, port: hp.port }).close();
      } catch (e) {
        const hint = e instanceof Deno.errors.AddrInUse && this.current.listen.length > 1
          ? " ([::] also takes IPv4 on dual-stack systems: list either [::] or 0.0.0.0 for a port)"
          : "";
        throw new Error(`udp ${formatHostPort(hp)}: ${(e as Error).message}${hint}`);
      }
    }
    const pool = new WorkerPool({
      count: this.workerCount,
      config: this.current,
      keys: () => this.allUsers().map((u) => u.key),
      policy: () => this.policyInputs,
      hooks: {
        admit: (sid, k, address) => {
          const user = this.users.byKey(k);
          if (!user) return null;
          const why = allowed(user, Date.now());
          if (why) {
            log.info("session {id} of user {user} refused: {reason}", {
              id: hex(sid),
              user: user.name,
              reason: why,
            });
          } else this.users.addSession(user);
          void address;
          return why;
        },
        opened: (p) => {
          log.debug("session {id} from {address} (worker {worker})", {
            id: hex(p.sid),
            address: p.address,
            worker: p.worker,
          });
          this.events.emit("session", { type: "opened", id: p.sid, address: p.address });
        },
        closed: (p, reason) => {
          log.debug("session {id} closed: {reason}", { id: hex(p.sid), reason });
          this.events.emit("session", {
            type: "closed",
            id: p.sid,
            address: p.view?.address ?? p.address,
            reason,
          });
        },
        counters: (rows) => {
          for (const [k, up, down, streams] of rows) {
            const user = this.users.byKey(k);
            if (!user) continue;
            for (let i = 0; i < streams; i++) this.users.addStream(user);
            if ((up > 0 || down > 0) && this.users.addBytes(user, up, down)) this.queueEnforce();
          }
        },
      },
    });
    this.pool = pool;
    try {
      await pool.start();
    } catch (e) {
      this.pool = null;
      const hp = this.current.listen[0];
      throw new Error(
        `udp ${this.current.listen.length === 1 ? formatHostPort(hp) : "listeners"}: ${
          (e as Error).message
        }`,
      );
    }
    for (const [i, a] of pool.addresses.entries()) {
      log.info("listening on udp {address} ({kind}, {workers} workers)", {
        kind: "linux-ffi",
        workers: this.workerCount,
        address: formatHostPort({ host: this.current.listen[i].host, port: a.port }),
      });
    }
    this.startTimers();
  }

  private startTimers(): void {
    const interval = this.options.statsIntervalMs ?? 5000;
    this.statsTimer = setInterval(() => this.events.emit("stats", this.stats()), interval);
    // The own addresses change under a running server (DHCP, a new interface, the public
    // name's DNS): look at them again now (a publicAddress name is resolved) and regularly.
    void this.refreshOwnAddresses();
    const refreshMs = this.options.ownAddressRefreshMs ?? 30_000;
    if (refreshMs > 0) {
      this.selfTimer = setInterval(() => void this.refreshOwnAddresses(), refreshMs);
      Deno.unrefTimer(this.selfTimer);
    }
    this.armFlush();
    this.enforceTimer = setInterval(() => this.enforce(), 1000);
    this.events.emit("state", { state: "running" });
  }

  private receiveLoop(carrier: CarrierListener): Promise<void> {
    // `addr` is set per datagram, before the dispatcher reads it.
    const peer: Peer = { addr: null!, send: (data, to) => carrier.send(data, to) };
    return carrier.run((data, from) => {
      peer.addr = from;
      try {
        this.dispatcher.handle(data, peer);
      } catch (e) {
        log.error("dispatcher failure: {error}", { error: String(e) });
      }
    });
  }

  private onSession(s: ServerSession): void {
    log.debug("session {id} from {address}", { id: hex(s.id), address: fmt(s.addr) });
    this.events.emit("session", { type: "opened", id: s.id, address: fmt(s.addr) });
    this.sessionKeys.set(s, keyHex(s.key.raw));
    const account = (up: number, down: number) => {
      const user = this.userOf(s);
      if (user && this.users.addBytes(user, up, down)) this.queueEnforce();
    };
    const user = this.userOf(s);
    const l3 = this.l3
      ? {
        hub: this.l3,
        port: {
          id: s.id,
          owner: user?.name ?? keyHex(s.key.raw),
          ...(this.fixedAddress(s) ? { fixed: this.fixedAddress(s)! } : {}),
          sendDatagram: (d: Uint8Array) => s.conn.sendDatagram(d),
          log: (message: string) => log.info("session {id}: {message}", { id: hex(s.id), message }),
        },
      }
      : undefined;
    serveSession(
      s.conn,
      this.services,
      account,
      () => {
        const user = this.userOf(s);
        if (user) this.users.addStream(user);
      },
      l3,
      {
        keyHex: keyHex(s.key.raw),
        log: (message: string) => log.info("session {id}: {message}", { id: hex(s.id), message }),
      },
    );
  }

  /** The fixed layer-3 address of the user behind `s` (the config's `users[].address`). */
  private fixedAddress(s: ServerSession): string | undefined {
    const hex = keyHex(s.key.raw);
    return usersOf(this.current).find((u) => keyHex(u.key) === hex)?.address;
  }

  /** The user a session belongs to (by its key; follows reloads). */
  userOf(s: ServerSession): User | undefined {
    const k = this.sessionKeys.get(s);
    return k === undefined ? undefined : this.users.byKey(k);
  }

  /** The management API's view of this server (docs/api.md). */
  apiBackend(): ApiBackend {
    const pool = this.pool;
    // With worker threads, answers wait for fresh counters from every worker (≤ 1 s).
    const fresh = <T>(f: () => T): T | Promise<T> => pool ? pool.refresh().then(f) : f();
    const users = this.userBackend();
    return {
      status: () =>
        fresh(() => {
          const t = this.stats();
          return {
            version: denoJson.version,
            uptimeSeconds: Math.round(t.uptimeMs / 100) / 10,
            sessions: t.sessions,
            streams: t.streams,
            users: this.users.list().length,
            bytesSent: t.bytesSent,
            bytesReceived: t.bytesReceived,
            handshakes: t.handshakes,
            migrations: t.migrations,
            drops: t.drops,
            egressDenied: t.egressDenied,
            forwarded: t.forwarded,
            workers: this.workerSummaries(),
          };
        }),
      sessions: () => fresh(() => this.sessionViews()),
      kick: (id, reason) => {
        if (pool) {
          for (const p of pool.sessions.values()) {
            if (hex(p.sid) === id && p.opened) {
              pool.close(p.sid, CloseCode.KICKED, reason);
              return pool.closed(p.sid).then(() => true);
            }
          }
          return false;
        }
        for (const s of this.dispatcher.allSessions()) {
          if (hex(s.id) === id) {
            s.conn.close(CloseCode.KICKED, reason);
            return true;
          }
        }
        return false;
      },
      metrics: () => fresh(() => prometheus(this.stats(), this.users.snapshot())),
      ...users,
      listUsers: () => fresh(() => this.users.list().map((u) => this.userView(u))),
      getUser: (name) =>
        fresh(() => {
          const u = this.users.get(name);
          return u ? this.userView(u) : undefined;
        }),
    };
  }

  /** The live sessions as the API shows them. */
  private sessionViews(): SessionView[] {
    if (this.pool) {
      const now = Date.now();
      const out: SessionView[] = [];
      for (const p of this.pool.sessions.values()) {
        if (!p.opened) continue;
        const v = p.view;
        out.push({
          id: hex(p.sid),
          user: this.users.byKey(p.keyHex)?.name ?? "?",
          address: v?.address ?? p.address,
          rttMs: v?.rttMs ?? 0,
          bytesSent: v?.bytesSent ?? 0,
          bytesReceived: v?.bytesReceived ?? 0,
          streams: v?.streams ?? 0,
          ageSeconds: Math.round((now - p.createdAt) / 1000),
          worker: p.worker,
        });
      }
      return out;
    }
    return [...this.dispatcher.allSessions()].map((s): SessionView => {
      const sess = s.conn.session;
      return {
        id: hex(s.id),
        user: this.userOf(s)?.name ?? "?",
        address: fmt(s.addr),
        rttMs: Math.round(sess.rtt.smoothed * 10) / 10,
        bytesSent: sess.stats.bytesSent,
        bytesReceived: sess.stats.bytesReceived,
        streams: sess.streamCount,
        ageSeconds: Math.round((Date.now() - s.createdAt) / 1000),
        worker: 0,
      };
    });
  }

  /** Each worker's share (one entry, index 0, with one worker). */
  workerSummaries(): WorkerSummary[] {
    if (!this.pool) {
      return [{
        index: 0,
        sessions: this.dispatcher.sessionCount,
        handshakes: this.dispatcher.handshakes,
        forwarded: 0,
        drops: { ...this.dispatcher.drops },
      }];
    }
    return this.pool.stats().map((w) => ({
      index: w.index,
      sessions: w.sessions.length,
      handshakes: w.handshakes,
      forwarded: w.forwarded,
      drops: { ...w.drops },
    }));
  }

  /**
   * The config's users, then the API users whose name and key do not clash
   * with them (a config reload may take a name; the API user then waits).
   */
  private allUsers(cfg: ServerConfig = this.current): UserConfig[] {
    const fromConfig = usersOf(cfg);
    const names = new Set(fromConfig.map((u) => u.name));
    const keys = new Set(fromConfig.map((u) => keyHex(u.key)));
    const out = [...fromConfig];
    for (const u of this.apiUsers) {
      if (names.has(u.name) || keys.has(keyHex(u.key))) {
        log.warn("API user {user} is shadowed by the config file (same name or key)", {
          user: u.name,
        });
        continue;
      }
      out.push(u);
    }
    return out;
  }

  /** Puts the users in force (registry and dispatcher keys); returns sessions closed. */
  private applyUsers(reason: string, cfg: ServerConfig = this.current): number {
    const users = this.allUsers(cfg);
    this.users.update(users);
    if (this.pool) {
      const live = new Set(users.map((u) => keyHex(u.key)));
      let closed = 0;
      for (const p of this.pool.sessions.values()) {
        if (live.has(p.keyHex) || p.closing) continue;
        p.closing = true;
        closed++;
      }
      this.pool.updateKeys(users.map((u) => u.key), CloseCode.KICKED, reason);
      return closed;
    }
    return this.dispatcher.updateKeys(users.map((u) => u.key), CloseCode.KICKED, reason);
  }

  /** The address share links carry: publicAddress, else the first listener (0.0.0.0/:: → 127.0.0.1). */
  advertisedAddress(): HostPort {
    if (this.current.publicAddress) return this.current.publicAddress;
    const bound = this.addresses[0] ??
      { hostname: this.current.listen[0].host, port: this.current.listen[0].port };
    return {
      host: isUnspecifiedHost(bound.hostname) ? "127.0.0.1" : bound.hostname,
      port: bound.port,
    };
  }

  private userView(u: User, now = Date.now()): UserView {
    const c = u.counters;
    let live = 0;
    if (this.pool) {
      for (const p of this.pool.sessions.values()) if (p.opened && p.keyHex === u.keyHex) live++;
    } else {
      for (const s of this.dispatcher.allSessions()) if (this.userOf(s) === u) live++;
    }
    return {
      name: u.name,
      source: this.isApiUser(u) ? "api" : "config",
      enabled: u.enabled,
      limitBytes: u.limitBytes ?? null,
      expires: u.expires === undefined ? null : new Date(u.expires).toISOString(),
      blocked: allowed(u, now),
      bytesUp: c.bytesUp,
      bytesDown: c.bytesDown,
      streams: c.streams,
      sessions: c.sessions,
      lastSeen: c.lastSeen === 0 ? null : new Date(c.lastSeen).toISOString(),
      liveSessions: live,
    };
  }

  private isApiUser(u: User): boolean {
    return this.apiUsers.some((a) => a.name === u.name && keyHex(a.key) === u.keyHex);
  }

  private mustGet(name: string): User {
    const u = this.users.get(name);
    if (!u) throw new ApiError(404, `no user ${name.slice(0, 64)}`);
    return u;
  }

  /** The API user named `name`: 404 if unknown, 409 if it is a config user. */
  private mustGetApiUser(name: string): ApiUserConfig {
    const u = this.mustGet(name);
    const a = this.apiUsers.find((x) => x.name === name);
    if (!a || !this.isApiUser(u)) {
      throw new ApiError(409, `user ${name} is defined in the config file; edit it there`);
    }
    return a;
  }

  /** Runs a store write; a failure becomes a 500 with the reason logged. */
  private persist(what: string, f: (s: CounterStore) => void): void {
    if (!this.store) return;
    try {
      f(this.store);
    } catch (e) {
      log.error("cannot write the state file ({what}): {error}", { what, error: String(e) });
      throw new ApiError(500, "cannot write the state file");
    }
  }

  /** The user endpoints of the management API. */
  private userBackend(): Pick<
    ApiBackend,
    "listUsers" | "getUser" | "createUser" | "updateUser" | "deleteUser" | "resetUser" | "userLink"
  > {
    const link = (u: User | UserConfig) => {
      const key = "key" in u ? u.key : hexToBytes(u.keyHex);
      return encodeShareLink({
        key,
        server: this.advertisedAddress(),
        mtu: this.current.mtu,
        name: u.name.startsWith("key-") ? undefined : u.name,
      });
    };
    return {
      listUsers: () => this.users.list().map((u) => this.userView(u)),
      getUser: (name) => {
        const u = this.users.get(name);
        return u ? this.userView(u) : undefined;
      },
      createUser: (input) => {
        const bad = checkUserName(input.name);
        if (bad) throw new ApiError(400, bad);
        if (this.users.get(input.name) || this.apiUsers.some((u) => u.name === input.name)) {
          throw new ApiError(409, `name: a user named ${input.name} exists`);
        }
        const key = input.key ?? generateAccessKey();
        const hex = keyHex(key);
        if (this.users.byKey(hex) || this.apiUsers.some((u) => keyHex(u.key) === hex)) {
          throw new ApiError(409, "key: already used by another user");
        }
        const cfg: ApiUserConfig = { name: input.name, key, enabled: input.enabled };
        if (input.limitBytes !== undefined) cfg.limitBytes = input.limitBytes;
        if (input.expires !== undefined) cfg.expires = input.expires;
        this.persist("create user", (s) => s.putUser(cfg));
        this.apiUsers.push(cfg);
        this.applyUsers("access key removed");
        log.info("user {user} created through the API", { user: cfg.name });
        return { user: this.userView(this.users.get(cfg.name)!), key: hex, link: link(cfg) };
      },
      updateUser: (name, patch) => {
        const a = this.mustGetApiUser(name);
        const next: ApiUserConfig = { ...a };
        if (patch.enabled !== undefined) next.enabled = patch.enabled;
        if (patch.limitBytes === null) delete next.limitBytes;
        else if (patch.limitBytes !== undefined) next.limitBytes = patch.limitBytes;
        if (patch.expires === null) delete next.expires;
        else if (patch.expires !== undefined) next.expires = patch.expires;
        this.persist("update user", (s) => s.putUser(next));
        this.apiUsers = this.apiUsers.map((u) => u === a ? next : u);
        this.applyUsers("access key removed");
        this.enforce();
        log.info("user {user} changed through the API", { user: name });
        return this.userView(this.users.get(name)!);
      },
      deleteUser: (name) => {
        this.mustGetApiUser(name);
        this.persist("delete user", (s) => s.deleteUser(name));
        this.apiUsers = this.apiUsers.filter((u) => u.name !== name);
        const kickedSessions = this.applyUsers("user deleted");
        this.users.forget(name);
        log.info("user {user} deleted through the API ({n} session(s) kicked)", {
          user: name,
          n: kickedSessions,
        });
        return { deleted: name, kickedSessions };
      },
      resetUser: (name) => {
        const u = this.mustGet(name);
        this.users.reset(name);
        this.flush();
        log.info("counters of user {user} reset through the API", { user: name });
        return this.userView(u);
      },
      userLink: (name) => link(this.mustGet(name)),
    };
  }

  /** Counters of every configured user. */
  userStats(): UserSnapshot[] {
    return this.users.snapshot();
  }

  private queueEnforce(): void {
    if (this.enforceQueued) return;
    this.enforceQueued = true;
    queueMicrotask(() => {
      this.enforceQueued = false;
      this.enforce();
    });
  }

  /**
   * Closes the live sessions of users who may no longer use the tunnel (over
   * the limit, expired, disabled) with the reason; returns how many.
   */
  enforce(now: number = Date.now()): number {
    if (this.pool) return this.enforcePool(this.pool, now);
    let closed = 0;
    for (const s of [...this.dispatcher.allSessions()]) {
      if (!s.conn.session.isOpen) continue;
      const user = this.userOf(s);
      const why = user ? allowed(user, now) : null;
      if (!why) continue;
      log.info("closing session {id} of user {user}: {reason}", {
        id: hex(s.id),
        user: user!.name,
        reason: why,
      });
      s.conn.close(CloseCode.LIMIT_REACHED, why);
      closed++;
    }
    return closed;
  }

  private enforcePool(pool: WorkerPool, now: number): number {
    let closed = 0;
    for (const p of [...pool.sessions.values()]) {
      if (p.closing || !p.opened) continue;
      const user = this.users.byKey(p.keyHex);
      const why = user ? allowed(user, now) : null;
      if (!why) continue;
      log.info("closing session {id} of user {user}: {reason}", {
        id: hex(p.sid),
        user: user!.name,
        reason: why,
      });
      pool.close(p.sid, CloseCode.LIMIT_REACHED, why);
      closed++;
    }
    return closed;
  }

  private armFlush(): void {
    clearInterval(this.flushTimer);
    this.flushTimer = undefined;
    if (!this.store) return;
    this.flushTimer = setInterval(() => this.flush(), this.current.statsFlushInterval * 1000);
  }

  /** Writes changed user counters to the state file (one transaction); false on failure. */
  flush(): boolean {
    if (!this.store) return true;
    const rows = this.users.takeDirty();
    if (rows.length === 0) return true;
    try {
      this.store.save(rows);
      return true;
    } catch (e) {
      this.users.markDirty(rows.map(([name]) => name));
      log.error("cannot write user counters: {error}", { error: String(e) });
      return false;
    }
  }

  /** Current counters. */
  stats(): ServerStats {
    if (this.pool) return this.poolStats(this.pool.stats());
    const live = [...this.dispatcher.allSessions()];
    return {
      ...trafficStats(live.map((s) => s.conn.session), performance.now() - this.startedAt),
      sessions: this.dispatcher.sessionCount,
      drops: { ...this.dispatcher.drops },
      handshakes: this.dispatcher.handshakes,
      migrations: live.reduce((n, s) => n + s.migrations, 0),
      egressDenied: { tcp: this.egressDeniedTcp, udp: this.udpStats.egressDenied },
      forwarded: 0,
      ...(this.listeners.length > this.sockets.length ? { carriers: this.carrierSummaries() } : {}),
    };
  }

  /** The listeners besides plain UDP, with what each counts. */
  private carrierSummaries(): CarrierSummary[] {
    return this.listeners.filter((l) => !(l instanceof UdpListener)).map((l) => {
      const x = l as CarrierListener & {
        stats?: () => Record<string, number | string>;
        counters?: Record<string, number>;
        connections?: number;
        flowCount?: number;
      };
      const counters = x.stats?.() ?? x.counters;
      const connections = x.connections ?? x.flowCount;
      return {
        kind: l.kind,
        port: l.local.port,
        ...(connections !== undefined ? { connections } : {}),
        ...(counters ? { counters: { ...counters } } : {}),
      };
    });
  }

  /** The sums of the workers' latest snapshots; rtt and cwnd of the busiest session. */
  private poolStats(workers: WorkerStats[]): ServerStats {
    const t = trafficStats([], performance.now() - this.startedAt);
    const drops: DropCounters = { ...this.dispatcher.drops };
    let busiest = -1;
    let handshakes = 0;
    let migrations = 0;
    let tcp = 0;
    let udp = 0;
    let forwarded = 0;
    for (const w of workers) {
      const x = w.traffic;
      t.sessions += x.sessions;
      t.streams += x.streams;
      t.bytesSent += x.bytesSent;
      t.bytesReceived += x.bytesReceived;
      t.packetsSent += x.packetsSent;
      t.packetsReceived += x.packetsReceived;
      t.packetsLost += x.packetsLost;
      t.retransmittedBytes += x.retransmittedBytes;
      if (x.sessions > 0 && w.busiestVolume > busiest) {
        busiest = w.busiestVolume;
        t.rttMs = x.rttMs;
        t.cwnd = x.cwnd;
      }
      for (const k of Object.keys(drops) as (keyof DropCounters)[]) drops[k] += w.drops[k];
      handshakes += w.handshakes;
      migrations += w.migrations;
      tcp += w.egressDeniedTcp;
      udp += w.udp.egressDenied;
      forwarded += w.forwarded;
    }
    return {
      ...t,
      drops,
      handshakes,
      migrations,
      egressDenied: { tcp, udp },
      forwarded,
    };
  }

  /** The TCP relay counters (summed over the workers with more than one). */
  relayCounters(): RelayStats {
    if (!this.pool) return { ...this.relayStats };
    const r: RelayStats = { opened: 0, failed: 0, bytesUp: 0, bytesDown: 0 };
    for (const w of this.pool.stats()) {
      r.opened += w.relay.opened;
      r.failed += w.relay.failed;
      r.bytesUp += w.relay.bytesUp;
      r.bytesDown += w.relay.bytesDown;
    }
    return r;
  }

  /** The UDP relay counters (summed over the workers with more than one). */
  udpCounters(): UdpRelayStats {
    if (!this.pool) return { ...this.udpStats };
    const r = newUdpRelayStats();
    for (const w of this.pool.stats()) {
      for (const k of Object.keys(r) as (keyof UdpRelayStats)[]) r[k] += w.udp[k];
    }
    return r;
  }

  /**
   * The counters after asking every worker for fresh ones (with one worker:
   * {@link stats} as is).
   */
  async statsNow(): Promise<ServerStats> {
    await this.pool?.refresh();
    return this.stats();
  }

  /** The worker threads, with more than one (tests). */
  get workerPool(): WorkerPool | null {
    return this.pool;
  }

  /** This host's interface addresses now (empty, with a warning, when they cannot be listed). */
  private interfaceAddresses(): string[] {
    try {
      return this.options.interfaceAddresses?.() ?? localAddresses();
    } catch (e) {
      log.warn("cannot list this host's addresses for the egress policy: {error}", {
        error: String(e),
      });
      return [];
    }
  }

  /**
   * The own addresses of `cfg` for the policy: `ownAddresses()` (interfaces,
   * listen addresses, a literal publicAddress) plus what a publicAddress that
   * is a name last resolved to.
   */
  private selfOf(cfg: ServerConfig, interfaces: readonly string[]): string[] {
    const resolved = this.publicResolved?.host === cfg.publicAddress?.host
      ? this.publicResolved?.addresses ?? []
      : [];
    return ownAddresses({ listen: cfg.listen, publicAddress: cfg.publicAddress }, [
      ...interfaces,
      ...resolved,
    ]);
  }

  /**
   * The egress policy of `cfg` (docs/egress.md): the built-in list, the
   * server's own addresses ({@link selfOf}) and `egress.allow` / `egress.deny`.
   */
  private buildPolicy(cfg: ServerConfig, interfaces: readonly string[]): EgressPolicy {
    const self = this.selfOf(cfg, interfaces);
    this.policySelf = self.join(" ");
    log.debug("egress policy: built-in list, {allow} allow and {deny} deny entries, own {self}", {
      allow: cfg.egress.allow.length,
      deny: cfg.egress.deny.length,
      self: this.policySelf,
    });
    this.policyInputs = { allow: cfg.egress.allow, deny: cfg.egress.deny, self };
    return new EgressPolicy({ allow: cfg.egress.allow, deny: cfg.egress.deny, self });
  }

  /**
   * Looks at the own addresses again — the interfaces, and a publicAddress
   * that is a name, resolved (a failure is logged at debug and keeps what it
   * resolved to before) — and rebuilds the policy when they changed. Runs at
   * start, after a reload and every `ownAddressRefreshMs`; never throws.
   */
  refreshOwnAddresses(): Promise<void> {
    // One at a time; asked while one runs (a reload to another name), it runs once more after.
    if (this.refreshing) this.refreshAgain = true;
    else {
      this.refreshing = (async () => {
        do {
          this.refreshAgain = false;
          await this.refreshOnce();
        } while (this.refreshAgain && !this.stopping);
      })().finally(() => this.refreshing = null);
    }
    return this.refreshing;
  }

  private async refreshOnce(): Promise<void> {
    try {
      const host = this.current.publicAddress?.host;
      if (host !== undefined && parseIp(host) === null) {
        try {
          const answers = await (this.options.lookup ?? systemResolver)(host);
          const addresses = answers.map((a) => a.address).filter((a) => parseIp(a) !== null);
          this.publicResolved = { host, addresses };
        } catch (e) {
          log.debug("cannot resolve publicAddress {host} for the egress policy: {error}", {
            host,
            error: String(e),
          });
        }
      }
      if (this.stopping) return;
      const cfg = this.current;
      const interfaces = this.interfaceAddresses();
      if (this.selfOf(cfg, interfaces).join(" ") === this.policySelf) return;
      this.policy = this.buildPolicy(cfg, interfaces);
      this.pool?.setPolicy(this.policyInputs);
      log.info("this server's own addresses changed; egress policy rebuilt (own {self})", {
        self: this.policySelf,
      });
    } catch (e) {
      log.debug("own-address refresh failed: {error}", { error: String(e) });
    }
  }

  /** The egress policy in force (docs/egress.md). */
  get egressPolicy(): EgressPolicy {
    return this.policy;
  }

  private current: ServerConfig;

  /** The configuration in force (changes on {@link reload}). */
  get config(): ServerConfig {
    return this.current;
  }

  /**
   * Applies a new configuration without dropping sessions of keys that
   * remain: keys, session cap and handshake rate take effect at once; sessions
   * under removed keys are closed with a reason. Listen addresses and the
   * session tunables of live sessions need a restart; the result says which
   * changes were not applied. A new egress policy (the config's, and the
   * host's addresses as they are now) applies to streams opened from now on
   * and to every later UDP datagram.
   */
  reload(next: ServerConfig): { closedSessions: number; needsRestart: string[] } {
    const needsRestart: string[] = [];
    const listen = (c: ServerConfig) => c.listen.map((h) => formatHostPort(h)).join(",");
    if (listen(next) !== listen(this.current)) needsRestart.push("listen");
    if (JSON.stringify(next.api ?? null) !== JSON.stringify(this.current.api ?? null)) {
      needsRestart.push("api");
    }
    for (const f of ["mtu", "idleTimeout", "maxStreamsPerSession", "connectTimeout"] as const) {
      if (next[f] !== this.current[f]) needsRestart.push(f);
    }
    if (next.stateFile !== this.current.stateFile) needsRestart.push("stateFile");
    for (const k of ["faketcp", "uot", "tls"] as const) {
      const was = JSON.stringify(this.current.carriers?.[k] ?? null);
      if (JSON.stringify(next.carriers?.[k] ?? null) !== was) needsRestart.push(k);
    }
    if (next.control !== this.current.control) needsRestart.push("control");
    const policy = this.buildPolicy(next, this.interfaceAddresses());
    const closedSessions = this.applyUsers("access key removed", next) + this.enforce();
    this.policy = policy;
    this.pool?.setPolicy(this.policyInputs);
    this.pool?.setConfig(next);
    this.dispatcher.updateLimits({
      maxSessions: next.maxSessions,
      handshakeRate: next.handshakeRate,
      handshakeBurst: next.handshakeBurst,
    });
    const flushChanged = next.statsFlushInterval !== this.current.statsFlushInterval;
    this.current = {
      ...next,
      listen: this.current.listen,
      stateFile: this.current.stateFile,
      carriers: this.current.carriers,
    };
    if (flushChanged && this.flushTimer !== undefined) this.armFlush();
    // A publicAddress name (maybe a new one) is resolved now; the policy follows when it differs.
    if (this.statsTimer !== undefined && !this.stopping) void this.refreshOwnAddresses();
    return { closedSessions, needsRestart };
  }

  /** Closes every session with a reason, then the sockets. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.statsTimer);
    clearInterval(this.enforceTimer);
    clearInterval(this.flushTimer);
    clearInterval(this.selfTimer);
    this.selfTimer = undefined;
    // A refresh in flight gives up once it sees `stopping`; a lookup that hangs is not waited for.
    if (this.refreshing) {
      let t: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.refreshing, new Promise((r) => t = setTimeout(r, 200))]);
      clearTimeout(t);
    }
    if (this.pool) {
      await this.pool.stop("server shutting down");
      this.flush();
      this.store?.close();
      this.store = null;
      this.events.emit("state", { state: "stopped" });
      return;
    }
    await closeDataPlane(
      {
        dispatcher: this.dispatcher,
        udpRelays: this.udpRelays,
        listeners: this.listeners,
        loops: this.loops,
      },
      CloseCode.SHUTDOWN,
      "server shutting down",
    );
    await this.l3?.stop();
    this.l3 = null;
    this.flush();
    this.store?.close();
    this.store = null;
    this.events.emit("state", { state: "stopped" });
  }
}

/** Prometheus text exposition of the server's counters. */
function prometheus(t: ServerStats, users: UserSnapshot[]): string {
  const out: string[] = [];
  const metric = (name: string, type: string, help: string, rows: [string, number][]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of rows) out.push(`${name}${labels} ${v}`);
  };
  const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
  metric("ostp_uptime_seconds", "gauge", "Seconds since start.", [["", t.uptimeMs / 1000]]);
  metric("ostp_sessions", "gauge", "Live sessions.", [["", t.sessions]]);
  metric("ostp_streams", "gauge", "Open streams.", [["", t.streams]]);
  metric("ostp_bytes_total", "counter", "Bytes on the wire by direction (live sessions).", [
    ['{direction="sent"}', t.bytesSent],
    ['{direction="received"}', t.bytesReceived],
  ]);
  metric("ostp_packets_lost_total", "counter", "Packets declared lost (live sessions).", [[
    "",
    t.packetsLost,
  ]]);
  metric("ostp_handshakes_total", "counter", "Handshakes accepted.", [["", t.handshakes]]);
  metric(
    "ostp_egress_denied_total",
    "counter",
    "Targets the egress policy refused: TCP streams and UDP datagrams.",
    [['{proto="tcp"}', t.egressDenied.tcp], ['{proto="udp"}', t.egressDenied.udp]],
  );
  metric(
    "ostp_drops_total",
    "counter",
    "Datagrams dropped without a reply, by reason.",
    Object.entries(t.drops).map(([k, v]) => [`{reason="${k}"}`, v as number]),
  );
  metric(
    "ostp_user_bytes_total",
    "counter",
    "Tunnelled bytes per user by direction.",
    users.flatMap((u) => [
      [`{user="${esc(u.name)}",direction="up"}`, u.bytesUp] as [string, number],
      [`{user="${esc(u.name)}",direction="down"}`, u.bytesDown] as [string, number],
    ]),
  );
  return out.join("\n") + "\n";
}

function hexToBytes(h: string): Uint8Array {
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substring(2 * i, 2 * i + 2), 16);
  return out;
}

function hex(id: number): string {
  return id.toString(16).padStart(8, "0");
}

const fmt = formatEndpoint;
