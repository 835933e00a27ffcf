/**
 * The "ostp" outbound: a pool of one or more sessions (`mux`) to the server.
 * Each session has its own runner and its own UDP socket, and is kept up
 * without limit: reconnect with exponential back-off and jitter (cut short
 * while a dial waits), state changes `idle → connecting → connected` reported
 * once each. A session whose server stopped answering is replaced by a new
 * handshake made beside it (decision 17 in docs/decisions.md). Flows go to the
 * connected session carrying the fewest streams, so losing one session's path
 * loses only that session's flows.
 * @module
 */

import { lookup } from "node:dns/promises";
import { deriveSecrets, type KeySecrets, Masker } from "../../shared/crypto/keys.ts";
import { type Dialer, DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import { Connection, type OstpStream } from "../../shared/session/connection.ts";
import {
  buildClientHello,
  type ClientHello,
  type HelloParams,
  readServerHello,
} from "../../shared/session/handshake.ts";
import { CloseCode, Receive, Session, type SessionConfig } from "../../shared/session/session.ts";
import { encodeOpenRequest, readOpenReply } from "../../shared/wire/open.ts";
import { decodeUdpDatagram, encodeUdpDatagram, udpHeaderSize } from "../../shared/wire/udp.ts";
import type { UdpFlow, UdpFlowOpener } from "./outbound.ts";
import { PacketCodec } from "../../shared/wire/packet.ts";
import { writeAll } from "../../shared/pipe.ts";
import type { DatagramSocket } from "../../shared/net/datagram.ts";
import type { CarrierDialer, CarrierLink } from "../../shared/carrier/carrier.ts";
import { UdpDialer } from "../../shared/carrier/udp.ts";
import { getLog } from "../../shared/log.ts";
import "../../ffi/udp_linux.ts";
import { L3_CONTROL_TARGET } from "../../shared/l3/control.ts";
import { MAP_CONTROL_TARGET } from "../../shared/wire/mapping.ts";
import { DatagramKind } from "../../shared/session/datagram_demux.ts";
import type { L3Path } from "../l3/l3_client.ts";

const log = getLog("client");

/** Lifecycle of one session runner. */
export type RunnerState = "idle" | "connecting" | "connected" | "stopped";

/** Settings of the pool. */
export interface OstpPoolOptions {
  server: { host: string; port: number };
  key: Uint8Array;
  mux: number;
  session: Partial<SessionConfig>;
  connectTimeoutMs: number;
  reconnect: { initialDelayMs: number; maxDelayMs: number };
  /** State change of runner `index` (each change reported once). */
  onState?: (index: number, state: RunnerState, detail?: string) => void;
  /**
   * A connection attempt of runner `index` failed; `streak` counts failures in
   * a row, `retryInMs` is the back-off before the next attempt.
   */
  onAttemptFailed?: (index: number, reason: string, streak: number, retryInMs: number) => void;
  /**
   * The server of runner `index`'s live session stopped answering (nothing for
   * `silentMs`); a new handshake starts beside it. Once per outage.
   */
  onUnresponsive?: (index: number, silentMs: number) => void;
  /**
   * The carrier of runner `index`'s live session gave up on its path (a
   * fake-TCP flow a NAT forgot, a reset connection); the session moves to a
   * new link. Once per loss.
   */
  onLinkLost?: (index: number, carrier: string) => void;
  /** Resolves the server's name (default: `node:dns/promises` `lookup`); bounded by the connect timeout. */
  lookup?: (host: string) => Promise<{ address: string }>;
  /** Opens a UDP socket (default: `openUdp`); may throw (EMFILE, …). Ignored with `carriers`. */
  openSocket?: (hostname: string, port: number) => DatagramSocket;
  /**
   * The carriers to reach the server on, in fallback order (default: UDP
   * alone). Each has its own server port. A handshake that gets no answer
   * on one carrier makes the next attempt use the next; a live session whose
   * server stops answering tries the next carrier too, and moves there
   * without a new handshake when the server answers on it (docs/carriers.md).
   */
  carriers?: readonly CarrierRoute[];
}

/** One carrier of the pool and the server port it reaches. */
export interface CarrierRoute {
  /** Opens links of this carrier. */
  dialer: CarrierDialer;
  /** The server's port for it (default: the server's UDP port). */
  port?: number;
}

/** Thrown when the handshake got no valid answer in time. */
export class HandshakeTimeoutError extends Error {
  constructor() {
    super("no answer from server");
    this.name = "HandshakeTimeoutError";
  }
}

/** First pause between two hellos of one handshake attempt, ms. */
const HELLO_RETRY_FIRST_MS = 500;
/** Longest pause between two hellos of one attempt, ms: a server back from a restart answers within it. */
const HELLO_RETRY_MAX_MS = 1000;
/** While a dial waits for a session, attempts start this often at least, whatever the back-off, ms. */
const DEMAND_RETRY_MS = 1000;
/**
 * How long a silent session probes over another carrier's new link before
 * the attempt's hello goes out too, ms (two probes at the hello pace).
 */
const CARRIER_MOVE_PROBE_MS = 900;
/** How long after an attempt started its link still looks for the hello's answer, ms. */
const HELLO_ANSWER_WINDOW_MS = 15_000;
/** A session that lasted this long resets the back-off, ms. */
const LASTING_SESSION_MS = 5000;
/**
 * When a new handshake is answered while the silent session was pinged with
 * the hello, the silent session's answer may come this much later (the two
 * replies travel to two sockets), ms: it keeps the old session if it does.
 */
const ANSWER_GRACE_MS = 50;

/** One handshake on its own fresh socket. */
interface Attempt {
  /** The attempt's own link (null until dialed). */
  link: CarrierLink | null;
  /** Index of its carrier in the pool's carrier list. */
  carrier: number;
  /**
   * The server's address this attempt resolved and handshakes with; it
   * becomes the runner's `serverAddr` only when the attempt's session is
   * installed (the live session keeps sending to its own meanwhile).
   */
  server: Deno.NetAddr;
  hello: ClientHello;
  params: HelloParams;
  started: number;
  /** The session made from the server's answer, once it came. */
  answer: Session | null;
  /** Handshake round trip of that answer, ms. */
  answerMs: number;
  /** The answer became the live connection. */
  installed: boolean;
  /** The silent session answered again first: an answer that still comes is closed at once. */
  cancelled: boolean;
  /** The silent session's packets went out on this attempt's link too. */
  carried: boolean;
  /** The hello went out (an answer may come). */
  helloSent: boolean;
  /**
   * The attempt reaches the live session's server host (its name may have
   * moved): only then may the silent session's packets take its link.
   */
  sameServer: boolean;
}

function closeQuietly(link: CarrierLink | null): void {
  try {
    link?.close();
  } catch {
    // already closed
  }
}

/**
 * Keeps one session to the server alive. When the live session's server stops
 * answering (a restarted server drops the old session's packets in silence),
 * it handshakes again on a fresh socket beside the old session, keeps the old
 * one if that answers first, and otherwise moves to the new one.
 */
export class SessionRunner {
  /** Current state. */
  state: RunnerState = "idle";
  /** The live connection (while `connecting`, possibly a silent one kept until a new one answers). */
  conn: Connection | null = null;
  /** Successful handshakes so far. */
  connects = 0;
  /** Time of the last handshake round trip, ms. */
  handshakeMs = 0;
  /** Receives the unreliable datagrams of every connection this runner makes. */
  onDatagram: ((conn: Connection, data: Uint8Array) => void) | null = null;
  /** Receives the streams the server opens (IN mappings); unset: they are closed. */
  onPeerStream: ((conn: Connection, stream: OstpStream) => void) | null = null;

  private link: CarrierLink | null = null;
  /** Carriers in fallback order. */
  private carriers: readonly CarrierRoute[];
  /** Index of the carrier the next handshake attempt uses. */
  private nextCarrier = 0;
  private stopped = false;
  private waiters: (() => void)[] = [];
  private loop: Promise<void> | null = null;
  /** The handshake in progress, if any. */
  private attempt: Attempt | null = null;
  /** True while the server of {@link conn} does not answer. */
  private silent = false;
  private backingOff = false;
  private lastAttemptAt = -Infinity;
  private wakeUp: (() => void) | null = null;
  private poked = false;
  /** Aborted by {@link stop}: ends a name lookup that is still waiting. */
  private readonly stopSignal = new AbortController();

  constructor(
    readonly index: number,
    private readonly opts: OstpPoolOptions,
    private readonly secrets: KeySecrets,
    private readonly masker: Masker,
  ) {
    this.carriers = opts.carriers?.length
      ? opts.carriers
      : [{ dialer: new UdpDialer(opts.openSocket) }];
  }

  /** Starts the keep-alive loop. */
  start(): void {
    this.loop ??= this.run();
  }

  /** Replaces the carriers (before {@link start}; an empty list keeps them). */
  setCarriers(routes: readonly CarrierRoute[]): void {
    if (routes.length > 0) this.carriers = routes;
  }

  private setState(s: RunnerState, detail?: string): void {
    if (this.state === s) return;
    this.state = s;
    this.opts.onState?.(this.index, s, detail);
    if (s === "connected") {
      for (const w of this.waiters.slice()) w();
    }
  }

  /**
   * Resolves when connected, or after `ms` (whichever first). A waiting caller
   * is demand: it cuts the runner's back-off short (see {@link DEMAND_RETRY_MS}).
   */
  waitConnected(ms: number): Promise<void> {
    if (this.state === "connected") return Promise.resolve();
    return new Promise((resolve) => {
      const waiters = this.waiters;
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        const i = waiters.indexOf(done);
        if (i >= 0) waiters.splice(i, 1);
        resolve();
      }
      waiters.push(done);
      if (this.backingOff) this.poke();
    });
  }

  /** Wakes the loop from {@link pause} (or makes its next pause return at once). */
  private poke(): void {
    const w = this.wakeUp;
    this.wakeUp = null;
    if (w) w();
    else this.poked = true;
  }

  /** Waits `ms` (Infinity: no timer) or until {@link poke}. */
  private pause(ms: number): Promise<void> {
    if (this.poked || this.stopped) {
      this.poked = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      let t: ReturnType<typeof setTimeout> | undefined;
      const done = () => {
        clearTimeout(t);
        if (this.wakeUp === done) this.wakeUp = null;
        resolve();
      };
      if (ms !== Infinity) t = setTimeout(done, Math.max(0, ms));
      this.wakeUp = done;
    });
  }

  private async run(): Promise<void> {
    let failures = 0; // attempts in a row without a lasting session
    let connectedAt = 0;
    while (!this.stopped) {
      const conn = this.conn;
      if (conn && !conn.isOpen) {
        // The session ended (idle timeout, closed by the server): reconnect.
        this.conn = null;
        this.silent = false;
        this.closeLink();
        const info = conn.session.closeInfo;
        this.setState("connecting", info.reason || `closed (code ${info.code})`);
        failures = performance.now() - connectedAt > LASTING_SESSION_MS ? 0 : failures + 1;
        if (failures > 0) await this.backoff(this.backoffDelay(failures));
        continue;
      }
      if (conn && !this.silent) {
        if (this.state !== "connected") {
          // The silent server answered again before a new handshake did.
          failures = 0;
          this.setState("connected", this.movedDetail ?? "the server answers again");
          this.movedDetail = null;
        }
        await this.pause(Infinity); // until the session closes or goes silent
        continue;
      }
      // No session, or a silent one that stays until a new one answers.
      this.setState("connecting", conn ? "new handshake beside the silent session" : undefined);
      try {
        if (await this.handshake()) {
          this.connects++;
          connectedAt = performance.now();
          this.setState("connected");
        }
      } catch (e) {
        if (this.stopped) break;
        failures++;
        const delay = this.backoffDelay(failures);
        this.opts.onAttemptFailed?.(this.index, (e as Error).message, failures, delay);
        await this.backoff(delay);
      }
    }
    this.setState("stopped");
  }

  /** Exponential back-off with jitter for the `failures`-th failure in a row, ms. */
  private backoffDelay(failures: number): number {
    const { initialDelayMs, maxDelayMs } = this.opts.reconnect;
    const base = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(failures - 1, 20));
    return base * (0.5 + Math.random() * 0.5);
  }

  /**
   * Sleeps `ms` between attempts. Cut short by stop, by the silent session
   * answering again or closing, and by demand: while a dial waits, the next
   * attempt starts {@link DEMAND_RETRY_MS} after the previous one at the latest.
   */
  private async backoff(ms: number): Promise<void> {
    const until = performance.now() + ms;
    this.backingOff = true;
    try {
      while (!this.stopped) {
        const c = this.conn;
        if (c && (!c.isOpen || !this.silent)) return;
        const now = performance.now();
        let left = until - now;
        if (this.waiters.length > 0) {
          left = Math.min(left, this.lastAttemptAt + DEMAND_RETRY_MS - now);
        }
        if (left <= 0) return;
        await this.pause(left);
      }
    } finally {
      this.backingOff = false;
    }
  }

  private closeLink(): void {
    closeQuietly(this.link);
    this.link = null;
  }

  /** True while the live session's server does not answer (a new handshake runs beside it). */
  get unresponsive(): boolean {
    return this.silent;
  }

  /** Local port of the current link (0 when none). */
  get localPort(): number {
    return this.link ? this.link.localPort : 0;
  }

  /** The carrier the live session rides on ("udp", "faketcp", …; "" when none). */
  get carrier(): string {
    return this.link?.kind ?? "";
  }

  /** The live link's own counters, where its carrier keeps some (FEC). */
  get carrierCounters(): Record<string, number | string> | undefined {
    const l = this.link as (CarrierLink & { stats?: () => object }) | null;
    const s = l?.stats?.();
    return s ? { ...s } as Record<string, number | string> : undefined;
  }

  /**
   * Moves the live session to a fresh link of its carrier (a new source
   * port) without a new handshake: NAT rebinding on demand, and the "socket
   * hopping" that defeats per-flow throttling. The server follows once it
   * has seen the new path's authenticated packets. Returns false when not
   * connected, or when no new link can be opened at once (logged; the session
   * stays where it is). Never throws: it runs from a signal listener and a
   * control command.
   */
  rebind(): boolean {
    const server = this.serverAddr;
    if (!this.conn || !this.link || !server) return false;
    const route = this.carriers[this.linkCarrier];
    let link: CarrierLink;
    try {
      const open = route.dialer.openNow;
      if (!open) return false; // stream carriers hop by reconnecting (docs/carriers.md)
      link = open.call(route.dialer, server);
    } catch (e) {
      log.warn("session {index}: cannot open a new {carrier} link to move to: {error}", {
        index: this.index,
        carrier: route.dialer.kind,
        error: String(e),
      });
      return false;
    }
    this.switchLink(link, this.linkCarrier);
    // Elicit acks from the server so it sees the new address at once.
    this.conn.session.ping();
    this.conn.flush();
    return true;
  }

  /** Makes `link` the live session's path; the old one lingers a moment for packets in flight. */
  private switchLink(link: CarrierLink, carrier: number): void {
    const old = this.link;
    this.link = link;
    this.linkCarrier = carrier;
    if (!this.reading.has(link)) this.receiveLoop(link, null);
    if (old && old !== link) setTimeout(() => closeQuietly(old), 2000);
  }

  private readonly send = (d: Uint8Array): void => {
    this.link?.send(d);
    // While a silent session waits on a handshake attempt over another carrier,
    // its packets take that path too: if the server still knows the session and
    // answers there, the session moves to it without a new handshake.
    const a = this.attempt;
    if (a?.link && a.link !== this.link && this.silent && !a.installed && a.sameServer) {
      a.carried = true;
      a.link.send(d);
    }
  };

  private serverAddr: Deno.NetAddr | null = null;
  /** Index of the live link's carrier. */
  private linkCarrier = 0;
  /** Links whose receive loop runs. */
  private readonly reading = new WeakSet<CarrierLink>();

  /**
   * Reads one link until it closes: for a handshake `attempt`, the server's
   * answer first (or, while the live session is silent, that session's
   * packets arriving on the new path); then the current session's packets.
   */
  private receiveLoop(link: CarrierLink, attempt: Attempt | null): void {
    this.reading.add(link);
    link.run((data) => {
      if (attempt !== null) {
        // The hello may be answered even after the silent session moved to this link: that
        // answer is a session the server must be told to drop (adopt() closes it).
        if (
          attempt.helloSent && !attempt.answer &&
          performance.now() - attempt.started < HELLO_ANSWER_WINDOW_MS &&
          this.onServerHello(attempt, data)
        ) return;
        if (!attempt.installed) {
          const conn = this.conn;
          if (!conn || !this.silent || attempt.answer) return;
          // The silent session's server answers on the attempt's carrier.
          if (conn.receive(data) !== Receive.DROPPED && this.conn === conn) {
            this.migrateTo(attempt);
          }
          return;
        }
      }
      // The live link, or one lingering after a move: packets in flight still count.
      this.conn?.receive(data);
    }).then(() => {
      // Only the current link's end matters. The carrier gave up on its path (a NAT that
      // forgot a fake-TCP flow, a reset TLS connection): the session is silent from now on,
      // and the next attempt — on the same carrier first, a new source port — moves it.
      if (link !== this.link || this.stopped) return;
      const conn = this.conn;
      if (!conn?.isOpen) return;
      this.linkLost = true;
      this.silent = true;
      this.opts.onLinkLost?.(this.index, link.kind);
      this.poke();
    });
  }

  /**
   * The live session answered on a handshake attempt's link: the session
   * moves to that carrier (no new handshake) and the attempt ends.
   */
  private migrateTo(a: Attempt): void {
    if (!a.link || a.installed) return;
    a.installed = true; // the attempt's link is taken; the handshake loop ends
    a.cancelled = true;
    const from = this.link?.kind ?? "?";
    this.switchLink(a.link, a.carrier);
    this.nextCarrier = a.carrier;
    this.movedDetail = from === a.link.kind
      ? `the server answers on a new ${from} path (local port ${a.link.localPort}), same session`
      : `moved from ${from} to ${a.link.kind} (local port ${a.link.localPort}), same session`;
    this.silent = false;
    this.poke();
  }

  /**
   * A datagram on an attempt's link before its answer is adopted: the
   * server hello (true), or anything else (false).
   */
  private onServerHello(a: Attempt, data: Uint8Array): boolean {
    if (a.answer) return false; // a repeated answer (dropped by the session), or its packet
    const ok = readServerHello(a.hello, this.masker, data);
    if (!ok) return false;
    const mtu = Math.min(a.params.maxDatagramSize, ok.params.maxDatagramSize);
    a.answer = new Session({
      protector: new PacketCodec({
        sessionId: a.hello.sessionId,
        sendKey: ok.keys.initiatorToResponder,
        recvKey: ok.keys.responderToInitiator,
        masker: this.masker,
      }),
      isClient: true,
      peer: ok.params,
      now: performance.now(),
      config: { ...this.opts.session, maxDatagramSize: mtu },
    });
    a.answerMs = performance.now() - a.started;
    const old = this.conn;
    if (old && old.isOpen && this.silent && !a.cancelled) {
      setTimeout(() => this.adopt(a), ANSWER_GRACE_MS);
    } else this.adopt(a);
    return true;
  }

  /** Installs an attempt's answered session, or closes it if the silent session answered first. */
  private adopt(a: Attempt): void {
    const session = a.answer!;
    const link = a.link!;
    if (a.cancelled || this.stopped || this.attempt !== a) {
      // Tell the server to drop the session we will not use (the link stays when the
      // silent session moved to it).
      new Connection(session, (d) => link.send(d)).close(CloseCode.NORMAL, "superseded");
      if (!a.installed) closeQuietly(link);
      this.poke();
      return;
    }
    const conn = new Connection(session, this.send);
    conn.onDatagram = (d) => this.onDatagram?.(conn, d);
    conn.onStream = (st) => {
      if (this.onPeerStream) this.onPeerStream(conn, st);
      else st.close();
    };
    a.installed = true;
    this.handshakeMs = a.answerMs;
    this.serverAddr = a.server;
    this.install(conn, link, a.carrier);
    // First packet confirms the session to the server.
    session.sendDatagram(new Uint8Array(0));
    conn.flush();
    this.poke();
  }

  /**
   * Makes `conn` (answered on `link`) the live connection. A previous one is
   * closed first (its streams fail; a server that still knows it is told
   * through its link), then that link is closed.
   */
  private install(conn: Connection, link: CarrierLink, carrier: number): void {
    const old = this.conn;
    const oldLink = this.link;
    old?.close(CloseCode.NORMAL, "replaced by a new session");
    this.conn = conn;
    this.link = link;
    this.linkCarrier = carrier;
    this.nextCarrier = carrier;
    this.silent = false;
    conn.onUnresponsive = (since) => {
      if (this.conn !== conn || this.silent) return;
      this.silent = true;
      this.opts.onUnresponsive?.(this.index, performance.now() - since);
      this.poke();
    };
    conn.onResponsive = () => {
      if (this.conn !== conn || !this.silent) return;
      this.silent = false;
      const a = this.attempt;
      // Its packets went out on the attempt's link too, and which path got through is
      // unknown (an answer on the old link may come from a server that heard the new one):
      // the session moves to the fresh link, which the server follows.
      if (a?.carried && a.link) this.migrateTo(a);
      else if (a) a.cancelled = true;
      this.poke();
    };
    conn.closed.then(() => this.poke());
    if (oldLink && oldLink !== link) closeQuietly(oldLink);
  }

  /**
   * The carrier of the next attempt: the last one that worked first; after
   * an unanswered attempt (or while the live session is silent) the next in
   * the fallback order.
   */
  private pickCarrier(): number {
    const n = this.carriers.length;
    const i = this.nextCarrier % n;
    if (n > 1 && !this.linkLost && (this.silent || this.failedOnCarrier)) {
      this.nextCarrier = (i + 1) % n;
      return this.nextCarrier;
    }
    return i;
  }

  /** The live link ended by itself: the next attempt stays on its carrier. */
  private linkLost = false;

  /** The previous attempt got no answer (the next tries the next carrier). */
  private failedOnCarrier = false;

  /**
   * One handshake attempt on a fresh link: the hello, repeated at growing
   * intervals capped at {@link HELLO_RETRY_MAX_MS}, until the server answers
   * (the answer installs the new connection, replacing a silent one) or the
   * connect timeout passes. A silent session is pinged with every hello, on
   * its own link and on the attempt's; returns false when it answered first
   * (it is kept, and moved to the attempt's carrier if it answered there).
   * @throws {HandshakeTimeoutError} when nothing answered in time.
   */
  private async handshake(): Promise<boolean> {
    this.lastAttemptAt = performance.now();
    const { host } = this.opts.server;
    const carrier = this.first ? 0 : this.pickCarrier();
    this.first = false;
    const lostLink = this.linkLost;
    this.linkLost = false;
    const route = this.carriers[carrier];
    const port = route.port ?? this.opts.server.port;
    // This attempt's own address: the live (silent) session keeps sending to its own.
    const server: Deno.NetAddr = { transport: "udp", hostname: await this.resolve(host), port };
    if (this.stopped) throw new Error("stopped");
    const cfg = this.opts.session;
    const params: HelloParams = {
      maxData: cfg.maxData ?? 32 * 1024 * 1024,
      maxStreamData: cfg.maxStreamData ?? 8 * 1024 * 1024,
      maxStreams: cfg.maxStreams ?? 8192,
      maxDatagramSize: cfg.maxDatagramSize ?? 1350,
    };
    const started = performance.now();
    const hello = buildClientHello(this.secrets, this.masker, params, Date.now());
    const a: Attempt = {
      link: null,
      carrier,
      server,
      hello,
      params,
      started,
      answer: null,
      answerMs: 0,
      installed: false,
      cancelled: false,
      carried: false,
      helloSent: false,
      sameServer: this.serverAddr?.hostname === server.hostname,
    };
    this.attempt = a;
    const deadline = started + this.opts.connectTimeoutMs;
    let wait = HELLO_RETRY_FIRST_MS;
    this.failedOnCarrier = false;
    try {
      const link = await this.dial(route, server, deadline);
      a.link = link;
      if (link.overhead > 0) {
        // The carrier's own header comes out of the UDP-sized budget.
        params.maxDatagramSize -= link.overhead;
        a.hello = buildClientHello(this.secrets, this.masker, params, Date.now());
      }
      this.receiveLoop(link, a);
      // A silent session trying another carrier to its own server, or a new path after its
      // carrier lost the old one: the probes alone first, so a server that still knows it moves
      // it there without a new handshake; the hello follows if they go unanswered (a restart).
      const move = lostLink || link.kind !== this.link?.kind;
      const helloAt = this.conn && this.silent && a.sameServer && move
        ? performance.now() + CARRIER_MOVE_PROBE_MS
        : 0;
      while (!a.installed && !a.cancelled && !this.stopped) {
        if (a.answer) {
          await this.pause(Infinity); // adopt() decides within ANSWER_GRACE_MS
          continue;
        }
        const old = this.conn;
        if (old && this.silent) {
          // Probe the silent session at the same pace (first): if it answers first, it
          // stays. The probe also goes over the attempt's link (see `send`).
          old.session.ping();
          old.flush();
        }
        if (performance.now() >= helloAt) {
          link.send(a.hello.datagram);
          a.helloSent = true;
        }
        link.flush();
        const left = deadline - performance.now();
        if (left <= 0) break;
        await this.pause(Math.min(wait, left));
        wait = Math.min(wait * 2, HELLO_RETRY_MAX_MS);
      }
    } catch (e) {
      if (this.attempt === a) this.attempt = null;
      closeQuietly(a.link);
      this.failedOnCarrier = true;
      if (this.stopped) throw new Error("stopped");
      throw new Error(`${route.dialer.kind}: ${(e as Error).message}`);
    } finally {
      if (this.attempt === a) this.attempt = null;
    }
    // Installed and cancelled: the silent session moved to the attempt's link (no handshake).
    if (a.installed) return !a.cancelled;
    if (a.cancelled && !this.stopped) {
      // An answer already on its way still gets closed politely (onServerHello).
      const link = a.link;
      setTimeout(() => closeQuietly(link), 2000);
      return false;
    }
    closeQuietly(a.link);
    this.failedOnCarrier = true;
    throw this.stopped ? new Error("stopped") : new HandshakeTimeoutError();
  }

  /** How the silent session came back, when it moved to an attempt's link (logged once). */
  private movedDetail: string | null = null;

  /** True until the first attempt (which always starts on the first carrier). */
  private first = true;

  /** Opens a link of `route` to `server`, bounded by `deadline` and by stop. */
  private async dial(route: CarrierRoute, server: Deno.NetAddr, deadline: number) {
    if (route.dialer.openNow) return route.dialer.openNow(server);
    const signal = AbortSignal.any([
      this.stopSignal.signal,
      AbortSignal.timeout(Math.max(1, deadline - performance.now())),
    ]);
    return await route.dialer.dial(server, signal);
  }

  /**
   * The server's address for `host`, within the connect timeout; rejects at
   * once when the runner stops (a lookup that hangs does not hold stop()).
   */
  private resolve(host: string): Promise<string> {
    if (this.stopped) return Promise.reject(new Error("stopped"));
    const ms = this.opts.connectTimeoutMs;
    const signal = this.stopSignal.signal;
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onStop);
      };
      const onStop = () => {
        done();
        reject(new Error("stopped"));
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`cannot resolve ${host}: no answer within ${ms} ms`));
      }, ms);
      signal.addEventListener("abort", onStop);
      Promise.resolve(host).then(this.opts.lookup ?? lookup).then((r) => {
        done();
        resolve(r.address);
      }, (e) => {
        done();
        reject(new Error(`cannot resolve ${host}: ${(e as Error).message}`));
      });
    });
  }

  /** Stops the runner and closes its session with a reason. */
  async stop(reason = "client shutting down"): Promise<void> {
    this.stopped = true;
    this.stopSignal.abort();
    this.poke();
    if (this.conn) {
      this.conn.close(CloseCode.SHUTDOWN, reason);
      await new Promise((r) => setTimeout(r, 10));
    }
    this.closeLink();
    for (const w of this.waiters.slice()) w();
    await this.loop;
  }
}

/** UDP flows one session carries at most (the server enforces the same bound). */
export const MAX_UDP_FLOWS_PER_SESSION = 256;

/** Counters of the pool's UDP flows. */
export interface PoolUdpStats {
  /** Flows opened so far. */
  flows: number;
  /** Datagrams from the server dropped: malformed, or for an unknown flow. */
  repliesDropped: number;
}

interface PoolFlow {
  id: number;
  conn: Connection | null;
  onReply: (from: Target, data: Uint8Array) => void;
}

/** A pool of session runners that dials targets through the tunnel. */
export class OstpPool {
  /** One runner per parallel session. */
  readonly runners: SessionRunner[];
  /** UDP relay counters. */
  readonly udpStats: PoolUdpStats = { flows: 0, repliesDropped: 0 };
  private next = 0;
  private readonly udpFlows = new Map<number, PoolFlow>();
  private readonly udpCounts = new WeakMap<Connection, number>();
  private nextFlowId = crypto.getRandomValues(new Uint32Array(1))[0];
  /** Receivers of layer-3 packets, by the session that holds the lease. */
  private readonly l3Handlers = new Map<Connection, (payload: Uint8Array) => void>();
  /** Receiver of IN UDP mapping datagrams (kind 3), with the session they came on. */
  onMapDatagram: ((conn: Connection, payload: Uint8Array) => void) | null = null;
  /** Receiver of the streams the server opens (IN TCP mappings); unset: closed. */
  set onPeerStream(h: ((conn: Connection, stream: OstpStream) => void) | null) {
    for (const r of this.runners) r.onPeerStream = h;
  }

  constructor(private readonly opts: OstpPoolOptions) {
    const secrets = deriveSecrets(opts.key);
    const masker = new Masker(secrets.obfsKey);
    this.runners = Array.from(
      { length: Math.max(1, opts.mux) },
      (_, i) => new SessionRunner(i, opts, secrets, masker),
    );
    for (const r of this.runners) r.onDatagram = (c, d) => this.routeDatagram(c, d);
  }

  /** Starts every runner. */
  start(): void {
    for (const r of this.runners) r.start();
  }

  /** Stops every runner. */
  async stop(): Promise<void> {
    await Promise.all(this.runners.map((r) => r.stop()));
  }

  /** Picks the connected session with the fewest streams (round robin among ties). */
  private pick(): Connection | null {
    return this.pickBy((c) => c.session.streamCount, Infinity);
  }

  /**
   * The connected session with the lowest `load` below `limit`, starting the
   * scan one further each call so ties rotate.
   */
  private pickBy(load: (c: Connection) => number, limit: number): Connection | null {
    let best: Connection | null = null;
    let bestCount = limit;
    const n = this.runners.length;
    for (let i = 0; i < n; i++) {
      const r = this.runners[(this.next + i) % n];
      const c = r.conn;
      if (!c || !c.isOpen || r.state !== "connected") continue;
      const count = load(c);
      if (count < bestCount) {
        best = c;
        bestCount = count;
      }
    }
    this.next = (this.next + 1) % n;
    return best;
  }

  /** A connected session, waiting for one until `deadline` (a `performance.now()` time). */
  private async connected(deadline: number): Promise<Connection> {
    let conn = this.pick();
    if (conn) return conn;
    const left = deadline - performance.now();
    if (left > 0) await Promise.race(this.runners.map((r) => r.waitConnected(left)));
    conn = this.pick();
    if (!conn) throw new DialError("unavailable", "tunnel is not connected");
    return conn;
  }

  /**
   * Opens a stream to `target` through the tunnel, within the connect timeout.
   * An open whose session closed (replaced by a new one, or dead) before the
   * server's answer is tried once more on the next session: the server never
   * answered it, and nothing of the application's was sent yet.
   */
  readonly dial: Dialer = async (target: Target): Promise<Duplex> => {
    return (await this.open(target)).stream;
  };

  /** {@link dial}, also saying which session carries the stream. */
  private async open(target: Target): Promise<{ stream: Duplex; conn: Connection }> {
    const request = encodeOpenRequest(target);
    const deadline = performance.now() + this.opts.connectTimeoutMs;
    for (let retried = false;; retried = true) {
      const conn = await this.connected(deadline);
      const stream = conn.openStream();
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        await writeAll(stream, request);
        await Promise.race([
          readOpenReply((p) => stream.read(p)),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new DialError("timeout", "no answer from the server for this stream")),
              Math.max(0, deadline - performance.now()),
            );
          }),
        ]);
        return { stream, conn };
      } catch (e) {
        stream.reset();
        if (e instanceof DialError) throw e;
        if (!retried && !conn.isOpen) continue;
        throw new DialError("unavailable", (e as Error).message);
      } finally {
        clearTimeout(timer);
      }
    }
  }

  /**
   * Opens the layer-3 control stream on a connected session and hands back
   * that session's datagram path (docs/l3.md): packets must ride the session
   * whose control stream holds the lease.
   */
  async openL3(): Promise<L3Path> {
    const { stream, conn } = await this.open(L3_CONTROL_TARGET);
    return {
      stream,
      send: (payload) => conn.sendDatagram(payload),
      onPacket: (handler) => {
        this.l3Handlers.set(conn, handler);
        conn.closed.then(() => {
          if (this.l3Handlers.get(conn) === handler) this.l3Handlers.delete(conn);
        });
      },
      closed: conn.closed,
    };
  }

  /**
   * Opens the mapping control stream (docs/mappings.md) on a connected
   * session; the server opens the IN mappings' streams on that session.
   */
  async openMapControl(): Promise<{ stream: Duplex; conn: Connection }> {
    return await this.open(MAP_CONTROL_TARGET);
  }

  /**
   * The largest UDP payload a flow's datagram to an IPv4 (`family` 4) or IPv6 (6) address
   * carries: the smallest datagram room of the open sessions minus the relay header; null
   * while no session is open (nothing is carried then).
   */
  maxUdpPayload(family: 4 | 6): number | null {
    let room = Infinity;
    for (const r of this.runners) {
      const c = r.conn;
      if (c && c.isOpen) room = Math.min(room, c.session.maxDatagramPayload);
    }
    if (room === Infinity) return null;
    return Math.max(0, room - udpHeaderSize(family === 4 ? "0.0.0.0" : "::")!);
  }

  /** Connected session with the fewest UDP flows below the per-session bound. */
  private pickUdp(): Connection | null {
    return this.pickBy((c) => this.udpCounts.get(c) ?? 0, MAX_UDP_FLOWS_PER_SESSION);
  }

  private attach(f: PoolFlow, c: Connection | null): void {
    if (f.conn) this.udpCounts.set(f.conn, Math.max(0, (this.udpCounts.get(f.conn) ?? 1) - 1));
    f.conn = c;
    if (c) this.udpCounts.set(c, (this.udpCounts.get(c) ?? 0) + 1);
  }

  private routeDatagram(conn: Connection, data: Uint8Array): void {
    if (data.length === 0) return; // the session-confirming empty datagram
    if (data[0] === DatagramKind.l3) {
      this.l3Handlers.get(conn)?.(data);
      return;
    }
    if (data[0] === DatagramKind.map) {
      this.onMapDatagram?.(conn, data);
      return;
    }
    const d = decodeUdpDatagram(data);
    const f = d ? this.udpFlows.get(d.flowId) : undefined;
    if (!d || !f || f.conn !== conn) {
      this.udpStats.repliesDropped++;
      return;
    }
    f.onReply({ host: d.host, port: d.port }, d.payload);
  }

  /**
   * Opens a UDP flow on one connected session (waiting up to the connect
   * timeout for one). Its datagrams carry a pool-unique flow id; replies come
   * back to `onReply`. If the session drops, the next datagram moves the flow
   * to a live session (the server then sees a new flow: UDP semantics).
   * @throws {DialError} "unavailable" when no session is connected or every
   *   connected session already carries {@link MAX_UDP_FLOWS_PER_SESSION} flows.
   */
  readonly openUdpFlow: UdpFlowOpener = async (onReply) => {
    let conn = this.pickUdp();
    if (!conn && !this.runners.some((r) => r.state === "connected")) {
      await Promise.race(this.runners.map((r) => r.waitConnected(this.opts.connectTimeoutMs)));
      conn = this.pickUdp();
    }
    if (!conn) throw new DialError("unavailable", "no session available for a UDP flow");
    let id = this.nextFlowId >>> 0;
    while (this.udpFlows.has(id)) id = (id + 1) >>> 0;
    this.nextFlowId = (id + 1) >>> 0;
    const f: PoolFlow = { id, conn: null, onReply };
    this.attach(f, conn);
    this.udpFlows.set(id, f);
    this.udpStats.flows++;
    let closed = false;
    const flow: UdpFlow = {
      send: (target, data) => {
        if (closed) return false;
        if (!f.conn?.isOpen) this.attach(f, this.pickUdp());
        const c = f.conn;
        if (!c) return false;
        const wire = encodeUdpDatagram(id, target, data);
        if (!wire || wire.length > c.session.maxDatagramPayload) return false;
        return c.sendDatagram(wire);
      },
      close: () => {
        if (closed) return;
        closed = true;
        this.attach(f, null);
        this.udpFlows.delete(id);
      },
    };
    return flow;
  };
}
