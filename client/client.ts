/**
 * The OSTP client as an object: the local SOCKS5 + HTTP proxy (the inbound),
 * the router and its outbounds (the pool of sessions to the server, direct,
 * block, upstream HTTP proxies), live reload of the routing, state and
 * traffic events. `client/main.ts` runs it
 * from the command line; `mod.ts` exports it for embedding.
 * @module
 */

import { type ClientCarriers, clientCarriers } from "./outbound/carrier_routes.ts";
import { type ClientConfig, formatHostPort } from "../shared/config/types.ts";
import { Emitter, type TrafficStats, trafficStats } from "../shared/events.ts";
import { getLog } from "../shared/log.ts";
import { isExpectedDisconnect } from "../shared/pipe.ts";
import { ProxyServer } from "./inbound/proxy_server.ts";
import { lookup } from "node:dns/promises";
import { formatPrefix, parseIp } from "../shared/net/cidr.ts";
import { setBypass } from "../shared/net/bypass.ts";
import { TunMode } from "./tun/tun_mode.ts";
import { buildOutbounds, type OutboundDeps } from "./outbound/from_config.ts";
import { OstpPool, type RunnerState } from "./outbound/ostp.ts";
import type { RoutingConfig } from "./router/config.ts";
import { createProcessResolver, type ProcessResolver } from "./router/process.ts";
import { Router, type RuleHits } from "./router/rules.ts";
import {
  RouterOutbound,
  type RouterUdpStats,
  routerUsesProcess,
  type RouteTable,
} from "./router/router_outbound.ts";

/** Events a client emits. */
export interface ClientEvents {
  [k: string]: unknown;
  /**
   * A session runner changed state; `detail` says why when it left `connected`,
   * or, on `connected` again without a new handshake, that the silent server answers again.
   */
  state: { session: number; state: RunnerState; detail?: string };
  /** Counters, every `statsIntervalMs`. */
  stats: ClientStats;
  /**
   * NAT traversal (docs/nat.md): a STUN answer on a session socket
   * (`change` "rebinding" when the NAT moved the mapping), or a TURN event.
   */
  nat:
    | ({ kind: "mapping" } & import("../shared/carrier/stun_udp.ts").MappingObservation)
    | { kind: "turn"; local: string; event: import("../shared/stun/turn_client.ts").TurnEvent };
  /** A port mapping came up or went down (docs/mappings.md). */
  mapping: import("./mapping/mappings.ts").MappingEvent;
}

/** The client's counters: the tunnel's traffic, and the router's rule hits and UDP drops. */
export interface ClientStats extends TrafficStats {
  /** Flows decided per rule and by the default since the last reload (docs/routing.md). */
  rules: RuleHits[];
  /** UDP datagrams the router dropped (block, http, no flow) and UDP flows it opened. */
  routerUdp: RouterUdpStats;
  /** Each session of the pool (`mux`): its state, local UDP port and open streams. */
  runners: RunnerStats[];
  /** Each port mapping: state, bytes each way, flows (docs/mappings.md). */
  mappings?: import("./mapping/mappings.ts").MappingStats[];
}

/** One session of the pool as {@link OstpClient.stats} reports it. */
export interface RunnerStats {
  /** Index of the session (0 .. mux-1), as in the log lines. */
  index: number;
  /** Its runner's state. */
  state: RunnerState;
  /** Local port of its current link (0 when it has none). */
  localPort: number;
  /** The carrier its session rides on ("udp", "faketcp", "udp+fec", …; "" when none). */
  carrier: string;
  /** Its carrier's counters, where it keeps some (FEC: recovered, ratio, loss). */
  carrierCounters?: Record<string, number | string>;
  /** Streams it carries now. */
  streams: number;
}

/** What {@link OstpClient.reload} did. */
export interface ClientReload {
  /** Rules in force now (the `exclude` rules included). */
  rules: number;
  /** Changed fields that only a restart applies (everything but routing and `log`). */
  needsRestart: string[];
}

/** Options beyond the config. */
export interface ClientOptions {
  /** Interval of `stats` events, ms (default 5000). */
  statsIntervalMs?: number;
  /** While the server stays unreachable, an info line about this often, ms (default 60000). */
  outageReminderMs?: number;
  /**
   * The process lookup for process rules (null: none); default the platform's
   * (`createProcessResolver`), created when rules first need it.
   */
  processResolver?: ProcessResolver | null;
}

const log = getLog("client");

/** Default of {@link ClientOptions.outageReminderMs}. */
const OUTAGE_REMINDER_MS = 60_000;

/** A running (or stopped) OSTP client. */
export class OstpClient {
  /** Subscribe to `state` and `stats`. */
  readonly events: Emitter<ClientEvents> = new Emitter();
  /** The session pool (the "ostp" outbound). */
  readonly pool: OstpPool;
  /** The router: the outbound the inbounds hand every flow to. */
  readonly router: RouterOutbound;
  private proxy: ProxyServer | null = null;
  /** The port mappings, when configured (after {@link start}). */
  private mappings: import("./mapping/mappings.ts").ClientMappings | null = null;
  private hopTimer: ReturnType<typeof setInterval> | undefined;
  private systemProxy: import("./sysproxy/system_proxy.ts").SystemProxy | null = null;
  /** TUN mode, when the config has a `tun` block (after {@link start}). */
  private tun: TunMode | null = null;
  private l3: import("./l3/l3_mode.ts").L3Mode | null = null;
  /** The routing config in force (changes on {@link reload}). */
  private routing: RoutingConfig;
  /** The process lookup: undefined until rules first need it, null where there is none. */
  private processResolver: ProcessResolver | null | undefined;
  private readonly outboundDeps: OutboundDeps;
  private statsTimer: ReturnType<typeof setInterval> | undefined;
  private readonly startedAt = performance.now();
  /** Per session: when the current outage was last logged (0: no outage). */
  private readonly outageLoggedAt: number[] = [];
  /** The carriers besides the default UDP one, when configured. */
  private carriers: ClientCarriers | null = null;

  constructor(readonly config: ClientConfig, private readonly options: ClientOptions = {}) {
    this.pool = new OstpPool({
      server: config.server,
      key: config.key,
      mux: config.mux,
      session: {
        maxDatagramSize: config.mtu,
        // 0 turns heartbeats (keepalive) or the idle close off.
        keepalive: config.keepalive > 0 ? config.keepalive * 1000 : Infinity,
        idleTimeout: config.idleTimeout > 0 ? config.idleTimeout * 1000 : Infinity,
      },
      connectTimeoutMs: config.connectTimeout * 1000,
      reconnect: {
        initialDelayMs: config.reconnect.initialDelay * 1000,
        maxDelayMs: config.reconnect.maxDelay * 1000,
      },
      onState: (i, state, detail) => this.onState(i, state, detail),
      onUnresponsive: (session, silentMs) => {
        this.outageLoggedAt[session] = performance.now();
        const silent = (silentMs / 1000).toFixed(1);
        log.warn(
          "session {session}: the server stopped answering (nothing for {silent} s); " +
            "starting a new handshake beside the session",
          { session, silent },
        );
      },
      onLinkLost: (session, carrier) => {
        this.outageLoggedAt[session] = performance.now();
        log.warn("session {session}: its {carrier} path was lost; moving it to a new one", {
          session,
          carrier,
        });
      },
      onAttemptFailed: (session, reason, streak, retryInMs) => {
        this.onAttemptFailed(session, reason, streak, retryInMs);
      },
    });
    this.outboundDeps = { pool: this.pool, connectTimeoutMs: config.connectTimeout * 1000 };
    this.routing = config.routing;
    this.router = new RouterOutbound(this.routeTable(config.routing));
    if (options.processResolver !== undefined) {
      this.processResolver = options.processResolver;
      this.router.setProcessResolver(options.processResolver);
    }
  }

  /** The router and outbounds of `routing`, reusing the running outbounds that did not change. */
  private routeTable(routing: RoutingConfig): RouteTable {
    const previous = this.router
      ? { configs: this.routing.outbounds, outbounds: this.router.outbounds }
      : undefined;
    return {
      router: new Router(routing),
      outbounds: buildOutbounds(routing.outbounds, this.outboundDeps, previous),
    };
  }

  /** Creates the process lookup the first time the rules of `table` need one. */
  private async ensureProcessResolver(table: RouteTable): Promise<void> {
    if (this.processResolver !== undefined || !routerUsesProcess(table.router)) return;
    let resolver: ProcessResolver | null = null;
    try {
      resolver = await createProcessResolver();
    } catch (e) {
      log.warn("process lookup unavailable: {error}", { error: String(e) });
    }
    if (this.processResolver !== undefined) return; // another reload made one meanwhile
    this.processResolver = resolver;
    if (resolver === null) {
      log.warn("process rules match no flow: no process lookup on {os}", { os: Deno.build.os });
    }
    this.router.setProcessResolver(resolver);
  }

  /**
   * Applies a new config: its routing (rules, exclude, outbounds, default,
   * resolve) for the flows that start from now on — flows already open keep
   * their outbound. Every other changed field is listed as needing a restart
   * (logging is the caller's: `setupLogging`).
   */
  async reload(next: ClientConfig): Promise<ClientReload> {
    const table = this.routeTable(next.routing);
    await this.ensureProcessResolver(table);
    this.router.swap(table);
    this.routing = next.routing;
    return { rules: next.routing.rules.length, needsRestart: restartFields(this.config, next) };
  }

  /**
   * An outage is news once (a warning); its retries are debug lines, except
   * one info line about every {@link ClientOptions.outageReminderMs} while it lasts.
   */
  private onAttemptFailed(session: number, reason: string, streak: number, retryInMs: number) {
    const now = performance.now();
    const last = this.outageLoggedAt[session] ?? 0;
    const retry = (retryInMs / 1000).toFixed(1);
    const data = { session, reason, streak, retry };
    if (last === 0) {
      this.outageLoggedAt[session] = now;
      log.warn("session {session}: {reason}; retrying with back-off", data);
    } else if (now - last >= (this.options.outageReminderMs ?? OUTAGE_REMINDER_MS)) {
      this.outageLoggedAt[session] = now;
      log.info(
        "session {session}: still no connection after {streak} attempts ({reason}); " +
          "next attempt in {retry} s",
        data,
      );
    } else {
      log.debug("session {session}: attempt {streak} failed: {reason}; next in {retry} s", data);
    }
  }

  private onState(session: number, state: RunnerState, detail?: string): void {
    const server = formatHostPort(this.config.server);
    if (state === "connected") this.outageLoggedAt[session] = 0;
    if (state === "connected" && detail) {
      log.info("session {session}: {detail}, it stays in use", { session, detail });
    } else if (state === "connected") {
      const r = this.pool.runners[session];
      const ms = r.handshakeMs.toFixed(1);
      const port = r.localPort;
      log.info("session {session} connected to {server} in {ms} ms (local port {port})", {
        session,
        server,
        ms,
        port,
      });
    } else if (state === "connecting") {
      log.info("session {session} connecting to {server}{why}", {
        session,
        server,
        why: detail ? ` (${detail})` : "",
      });
    } else {
      log.debug("session {session} {state}", { session, state });
    }
    this.events.emit("state", { session, state, detail });
  }

  /** The local proxy's bound address (after {@link start}). */
  get proxyAddress(): Deno.NetAddr {
    if (!this.proxy) throw new Error("client not started");
    return this.proxy.addr;
  }

  /** Starts the sessions and the local proxy. */
  async start(): Promise<void> {
    for (const r of this.pool.runners) {
      this.events.emit("state", { session: r.index, state: "idle" });
    }
    if (this.config.carriers || this.config.nat) {
      this.carriers = await clientCarriers(this.config.carriers, this.config.server.host, {
        connectTimeoutMs: this.config.connectTimeout * 1000,
        ...(this.config.nat ? { nat: this.config.nat } : {}),
        hooks: {
          onMapping: (o) => this.events.emit("nat", { kind: "mapping", ...o }),
          onTurn: (e, local) => this.events.emit("nat", { kind: "turn", local, event: e }),
        },
      });
      for (const r of this.pool.runners) r.setCarriers(this.carriers.routes);
      log.info("carriers: {order}", {
        order: this.carriers.routes.map((c) => c.dialer.kind).join(", "),
      });
    }
    this.pool.start();
    await this.ensureProcessResolver({
      router: this.router.router,
      outbounds: this.router.outbounds,
    });
    if (this.config.mappings.length > 0) {
      const { ClientMappings } = await import("./mapping/mappings.ts");
      this.mappings = new ClientMappings(this.config.mappings, {
        pool: this.pool,
        router: this.router,
        onEvent: (e) => this.events.emit("mapping", e),
      });
      this.mappings.start();
    }
    if (this.config.hopInterval > 0) {
      this.hopTimer = setInterval(() => {
        log.debug("hop interval: moved {moved} session(s) to new sockets", { moved: this.hop() });
      }, this.config.hopInterval * 1000);
    }
    if (this.config.proxy) await this.startProxy();
    if (this.config.tun) await this.startTun(this.config.tun);
    if (this.config.l3) await this.startL3(this.config.l3);
    const interval = this.options.statsIntervalMs ?? 5000;
    this.statsTimer = setInterval(() => this.events.emit("stats", this.stats()), interval);
  }

  /** The local SOCKS5 + HTTP proxy. */
  private async startProxy(): Promise<void> {
    this.proxy = new ProxyServer({
      hostname: this.config.listen.host,
      port: this.config.listen.port,
      outbound: this.router,
      inbound: "proxy",
      auth: this.config.auth,
      udp: {},
      onError: (e) => {
        if (!isExpectedDisconnect(e)) {
          log.debug("proxy connection error: {error}", { error: String(e) });
        }
      },
    });
    await this.proxy.start();
    log.info("proxy (SOCKS5 + HTTP) listening on {address}", {
      address: formatHostPort({ host: this.proxy.addr.hostname, port: this.proxy.addr.port }),
    });
    if (this.config.systemProxy) {
      const { enableWindowsSystemProxy } = await import("./sysproxy/windows.ts");
      const a = this.proxy.addr;
      this.systemProxy = await enableWindowsSystemProxy({
        host: a.hostname === "0.0.0.0" ? "127.0.0.1" : a.hostname === "::" ? "::1" : a.hostname,
        port: a.port,
        ...excludedForSystemProxy(this.routing),
      });
      log.info("system proxy set to {address} (restored on exit)", {
        address: formatHostPort({ host: a.hostname, port: a.port }),
      });
    }
  }

  /** Brings TUN mode up: marks the client's own sockets, then the device, inbound and routes. */
  private async startTun(tun: NonNullable<ClientConfig["tun"]>): Promise<void> {
    const { dialMarked } = await import("../ffi/tcp_linux.ts");
    // Every socket the client opens from now on bypasses the TUN (the policy rules skip the
    // mark); the pool's current socket predates this, and the server's addresses keep the
    // main table anyway.
    setBypass({ mark: tun.mark, dial: dialMarked });
    const host = this.config.server.host;
    const servers = parseIp(host)
      ? [host]
      : (await lookup(host, { all: true })).map((a) => a.address);
    const excludeCidrs = this.config.routing.rules
      .filter((r) => r.label === "exclude.ips")
      .flatMap((r) => (r.match.ip ?? []).map(formatPrefix));
    // Flows to an address no DNS answer named are sniffed only when a domain rule could care.
    const sniffWhen = () =>
      this.routing.rules.some((r) =>
        r.match.domain !== undefined || r.match.domainSuffix !== undefined
      );
    this.tun = await TunMode.start(tun, {
      router: this.router,
      servers,
      excludeCidrs,
      sniffWhen,
      udpMaxPayload: (family) => this.pool.maxUdpPayload(family),
    });
  }

  /** Layer 3: asks the server for addresses; the TUN comes up with the first grant. */
  private async startL3(cfg: NonNullable<ClientConfig["l3"]>): Promise<void> {
    const { L3Mode } = await import("./l3/l3_mode.ts");
    if (cfg.defaultRoute) {
      const { dialMarked } = await import("../ffi/tcp_linux.ts");
      setBypass({ mark: cfg.mark, dial: dialMarked });
    }
    const host = this.config.server.host;
    const servers = parseIp(host)
      ? [host]
      : (await lookup(host, { all: true })).map((a) => a.address);
    this.l3 = await L3Mode.start(cfg, { open: () => this.pool.openL3(), servers });
  }

  /** Current counters: traffic summed over sessions, then the router's. */
  stats(): ClientStats {
    const sessions = this.pool.runners.flatMap((r) => (r.conn ? [r.conn.session] : []));
    const route = this.router.stats();
    return {
      ...trafficStats(sessions, performance.now() - this.startedAt),
      rules: route.rules,
      routerUdp: route.udp,
      runners: this.pool.runners.map((r) => ({
        index: r.index,
        state: r.state,
        localPort: r.localPort,
        carrier: r.carrier,
        ...(r.carrierCounters ? { carrierCounters: r.carrierCounters } : {}),
        streams: r.conn?.session.streamCount ?? 0,
      })),
      ...(this.mappings ? { mappings: this.mappings.stats() } : {}),
    };
  }

  /**
   * Moves every session to a fresh UDP socket (a new source port) without a
   * new handshake: SIGUSR2, the control socket's `hop`, `--hop-interval`.
   * Returns how many moved (stream carriers and TURN do not hop).
   */
  hop(): number {
    return this.pool.runners.filter((r) => r.rebind()).length;
  }

  /** Stops the proxy, closes the outbounds and the sessions. */
  async stop(): Promise<void> {
    clearInterval(this.statsTimer);
    clearInterval(this.hopTimer);
    // The user's proxy settings come back first: never a system proxy pointing at nothing.
    await this.systemProxy?.restore();
    this.systemProxy = null;
    await this.mappings?.stop();
    this.mappings = null;
    // Host changes are undone first: the machine must not be left routing into a dead TUN.
    await this.tun?.stop();
    this.tun = null;
    await this.l3?.stop();
    this.l3 = null;
    setBypass(null);
    await this.proxy?.close();
    await this.router.close();
    await this.pool.stop();
    await this.carriers?.close();
    this.carriers = null;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The `exclude` block's domains and CIDRs, for the system proxy's bypass list. */
function excludedForSystemProxy(routing: RoutingConfig): { domains: string[]; ips: string[] } {
  const domains: string[] = [];
  const ips: string[] = [];
  for (const r of routing.rules) {
    if (r.label === "exclude.domains") domains.push(...(r.match.domainSuffix ?? []));
    if (r.label === "exclude.ips") ips.push(...(r.match.ip ?? []).map(formatPrefix));
  }
  return { domains, ips };
}

/** Fields of `next` that differ from `running` and apply only after a restart. */
export function restartFields(running: ClientConfig, next: ClientConfig): string[] {
  const out: string[] = [];
  if (formatHostPort(running.server) !== formatHostPort(next.server)) out.push("server");
  if (!sameBytes(running.key, next.key)) out.push("key");
  if (formatHostPort(running.listen) !== formatHostPort(next.listen)) out.push("listen");
  if (
    running.auth?.username !== next.auth?.username || running.auth?.password !== next.auth?.password
  ) out.push("auth");
  for (
    const f of [
      "mux",
      "mtu",
      "keepalive",
      "idleTimeout",
      "connectTimeout",
      "proxy",
      "hopInterval",
    ] as const
  ) {
    if (running[f] !== next[f]) out.push(f);
  }
  if (running.mappings.map((m) => m.spec).join() !== next.mappings.map((m) => m.spec).join()) {
    out.push("mappings");
  }
  if (
    running.reconnect.initialDelay !== next.reconnect.initialDelay ||
    running.reconnect.maxDelay !== next.reconnect.maxDelay
  ) out.push("reconnect");
  if (running.control !== next.control) out.push("control");
  return out;
}
