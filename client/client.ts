/**
 * The OSTP client as an object: the local SOCKS5 + HTTP proxy, the pool of
 * sessions to the server, state and traffic events. `client/main.ts` runs it
 * from the command line; `mod.ts` exports it for embedding.
 * @module
 */

import { type ClientConfig, formatHostPort } from "../shared/config/types.ts";
import { Emitter, type TrafficStats, trafficStats } from "../shared/events.ts";
import { getLog } from "../shared/log.ts";
import { isExpectedDisconnect } from "../shared/pipe.ts";
import { ProxyServer } from "./inbound/proxy_server.ts";
import { OstpPool, type RunnerState } from "./outbound/ostp.ts";

/** Events a client emits. */
export interface ClientEvents {
  [k: string]: unknown;
  /**
   * A session runner changed state; `detail` says why when it left `connected`,
   * or, on `connected` again without a new handshake, that the silent server answers again.
   */
  state: { session: number; state: RunnerState; detail?: string };
  /** Counters, every `statsIntervalMs`. */
  stats: TrafficStats;
}

/** Options beyond the config. */
export interface ClientOptions {
  /** Interval of `stats` events, ms (default 5000). */
  statsIntervalMs?: number;
  /** While the server stays unreachable, an info line about this often, ms (default 60000). */
  outageReminderMs?: number;
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
  private proxy: ProxyServer | null = null;
  private statsTimer: ReturnType<typeof setInterval> | undefined;
  private readonly startedAt = performance.now();
  /** Per session: when the current outage was last logged (0: no outage). */
  private readonly outageLoggedAt: number[] = [];

  constructor(readonly config: ClientConfig, private readonly options: ClientOptions = {}) {
    this.pool = new OstpPool({
      server: config.server,
      key: config.key,
      mux: config.mux,
      session: {
        maxDatagramSize: config.mtu,
        keepalive: config.keepalive * 1000,
        idleTimeout: config.idleTimeout * 1000,
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
      onAttemptFailed: (session, reason, streak, retryInMs) => {
        this.onAttemptFailed(session, reason, streak, retryInMs);
      },
    });
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
    this.pool.start();
    this.proxy = new ProxyServer({
      hostname: this.config.listen.host,
      port: this.config.listen.port,
      dialer: this.pool.dial,
      auth: this.config.auth,
      udp: { openFlow: this.pool.openUdpFlow },
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
    const interval = this.options.statsIntervalMs ?? 5000;
    this.statsTimer = setInterval(() => this.events.emit("stats", this.stats()), interval);
  }

  /** Current counters summed over sessions. */
  stats(): TrafficStats {
    const sessions = this.pool.runners.flatMap((r) => (r.conn ? [r.conn.session] : []));
    return trafficStats(sessions, performance.now() - this.startedAt);
  }

  /** Stops the proxy and closes the sessions with a reason. */
  async stop(): Promise<void> {
    clearInterval(this.statsTimer);
    await this.proxy?.close();
    await this.pool.stop();
  }
}
