/**
 * The server's UDP relay (docs/protocol.md, "UDP relay"): the DATAGRAM frames
 * of one session carry `flow id + address + payload`; per flow id the relay
 * keeps a UDP socket (one per address family, created on the first datagram
 * to that family), sends the payload to the target and returns every reply
 * as a DATAGRAM with the flow id and the reply's source address.
 *
 * Bounds: at most `maxFlows` flows per session (beyond: dropped and counted),
 * a flow without traffic for `idleTimeoutMs` is closed, and everything is
 * closed with the session.
 *
 * Every target passes the egress policy (docs/egress.md) before a datagram is
 * sent: a name is resolved here (a short process-wide cache) and refused when
 * any of its addresses is; the decision is kept per flow and target, so a
 * stream of datagrams costs one lookup and one check. Every datagram is
 * decided under the policy in force: when a reload has replaced it, the flow's
 * kept decisions are forgotten and each target is decided again under the new
 * one (an `egress.deny` added by a reload reaches long-lived flows too).
 * Refused datagrams are dropped and counted (`egressDenied`).
 * @module
 */

import { lookup } from "node:dns/promises";
import type { Connection } from "../shared/session/connection.ts";
import { type DatagramSocket, openUdp } from "../shared/net/datagram.ts";
import { decodeUdpDatagram, encodeUdpDatagram } from "../shared/wire/udp.ts";
import { UPSTREAM_TARGET } from "../shared/wire/mapping.ts";
import type { Target } from "../shared/duplex.ts";
import { formatIp, parseIpInto } from "../shared/net/cidr.ts";
import { EgressPolicy, resolveAllowed, type Resolver } from "./egress.ts";

/** UDP relay counters, summed over sessions. */
export interface UdpRelayStats {
  flowsOpened: number;
  datagramsUp: number;
  datagramsDown: number;
  /** Malformed DATAGRAM payloads. */
  malformed: number;
  /** Datagrams of new flows beyond the per-session bound. */
  flowLimitDropped: number;
  /** Names that did not resolve (datagram dropped). */
  dnsFailed: number;
  /** Replies too big for one DATAGRAM frame, or refused by the session. */
  downDropped: number;
  /** Datagrams to targets the egress policy refuses (dropped). */
  egressDenied: number;
  /** Datagrams dropped while their target's name was still being resolved (queue full). */
  queueDropped: number;
}

/** Fresh zeroed counters. */
export function newUdpRelayStats(): UdpRelayStats {
  return {
    flowsOpened: 0,
    datagramsUp: 0,
    datagramsDown: 0,
    malformed: 0,
    flowLimitDropped: 0,
    dnsFailed: 0,
    downDropped: 0,
    egressDenied: 0,
    queueDropped: 0,
  };
}

/** Options of {@link UdpRelay}. */
export interface UdpRelayOptions {
  /** Flows per session at most; default 256. */
  maxFlows?: number;
  /** A flow without a datagram either way for this long is closed; default 60 000 ms. */
  idleTimeoutMs?: number;
  /** Counters to add to (shared by every session's relay). */
  stats?: UdpRelayStats;
  /** Told the payload bytes of every datagram relayed, up (to targets) or down (to the client). */
  account?: (up: number, down: number) => void;
  /** Every address a name has (default: {@link cachedResolver}, the system resolver cached 30 s). */
  lookup?: Resolver;
  /**
   * The egress policy in force, asked at every datagram (cheap: compared by
   * identity); a new one makes every flow decide its targets again. Default:
   * the built-in list alone.
   */
  policy?: () => EgressPolicy;
  /**
   * The server's default UDP upstream (`--udp-upstream`, an address), for
   * datagrams to the reserved target of OUT mappings to ANY; absent: none.
   */
  upstream?: () => Target | undefined;
  /**
   * Told the first refusal of each flow's target (under each policy): the
   * target, the full reason for the log (with the address a name resolved
   * to), the deciding entry.
   */
  onDenied?: (host: string, port: number, reason: string, rule: string) => void;
}

/** A target's decision is being made (DNS). */
const PENDING = 0;
/** Allowed: datagrams go to `address`. */
const ALLOWED = 1;
/** Refused by the egress policy. */
const DENIED = 2;
/** The name did not resolve; asked again after {@link DNS_NEGATIVE_TTL_MS}. */
const UNRESOLVED = 3;
/** The session had {@link MAX_LOOKUPS} lookups running: asked again at the next datagram. */
const BUSY = 4;

/** One target of a flow and the policy's decision about it. */
interface FlowTarget {
  readonly host: string;
  readonly port: number;
  state: number;
  /** The checked address literal datagrams are sent to (when allowed). */
  address: string;
  /** When an {@link UNRESOLVED} target may be resolved again (performance.now()). */
  retryAt: number;
  /** Datagrams waiting for a {@link PENDING} decision. */
  queue: Uint8Array[] | null;
  /** The port datagrams go to, when not {@link port} (the default upstream). */
  toPort?: number;
}

interface Flow {
  id: number;
  v4: DatagramSocket | null;
  v6: DatagramSocket | null;
  lastActive: number;
  /** The policy {@link targets} were decided under (replaced, and they forgotten, on a reload). */
  policy: EgressPolicy;
  /** Decisions by host, then port, under {@link policy} (bounded by {@link MAX_FLOW_TARGETS}). */
  targets: Map<string, Map<number, FlowTarget>>;
  targetCount: number;
  /** The target of the previous datagram: most flows talk to one target. */
  last: FlowTarget | null;
}

/** Targets remembered per flow; past that the flow's decisions are forgotten and made again. */
const MAX_FLOW_TARGETS = 64;
/** Datagrams queued per target while its name resolves; more are dropped (`queueDropped`). */
const MAX_PENDING_DATAGRAMS = 32;
/** Datagrams queued per session (all targets) while names resolve; more are dropped. */
const MAX_QUEUED_DATAGRAMS = 128;
/** Name lookups running at once per session; a datagram needing one more is dropped. */
const MAX_LOOKUPS = 16;

const DNS_TTL_MS = 30_000;
const DNS_NEGATIVE_TTL_MS = 5_000;
const DNS_CACHE_MAX = 4096;
type Answers = Awaited<ReturnType<Resolver>>;
const dnsCache = new Map<string, { answers: Answers | null; expires: number }>();

/**
 * Every address of `host` from the system resolver, cached briefly
 * (process-wide: 30 s, failures 5 s); rejects when the name does not resolve.
 */
export const cachedResolver: Resolver = async (host) => {
  const now = performance.now();
  const hit = dnsCache.get(host);
  if (hit && hit.expires > now) {
    if (hit.answers === null) throw new Error(`cannot resolve ${host}`);
    return hit.answers;
  }
  let answers: Answers | null = null;
  try {
    answers = await lookup(host, { all: true });
  } catch {
    answers = null;
  }
  if (dnsCache.size >= DNS_CACHE_MAX) {
    for (const [k, v] of dnsCache) if (v.expires <= now) dnsCache.delete(k);
    if (dnsCache.size >= DNS_CACHE_MAX) dnsCache.clear();
  }
  dnsCache.set(host, { answers, expires: now + (answers ? DNS_TTL_MS : DNS_NEGATIVE_TTL_MS) });
  if (answers === null) throw new Error(`cannot resolve ${host}`);
  return answers;
};

/** The policy of relays built without one: the built-in list alone. */
let builtInPolicy: EgressPolicy | null = null;
const defaultPolicy = (): EgressPolicy => builtInPolicy ??= new EgressPolicy();

/** The UDP relay of one session. */
export class UdpRelay {
  readonly #conn: Connection;
  readonly #flows = new Map<number, Flow>();
  readonly #maxFlows: number;
  readonly #idleMs: number;
  readonly #lookup: Resolver;
  readonly #policy: () => EgressPolicy;
  readonly #upstream: (() => Target | undefined) | undefined;
  readonly #onDenied: UdpRelayOptions["onDenied"];
  readonly #scratch = new Uint8Array(16);
  /** Datagrams waiting for a lookup, and lookups running (bounded per session). */
  #queued = 0;
  #lookups = 0;
  readonly stats: UdpRelayStats;
  readonly #account: ((up: number, down: number) => void) | undefined;
  #sweep: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  constructor(conn: Connection, opts: UdpRelayOptions = {}) {
    this.#conn = conn;
    this.#maxFlows = opts.maxFlows ?? 256;
    this.#idleMs = opts.idleTimeoutMs ?? 60_000;
    this.#lookup = opts.lookup ?? cachedResolver;
    this.#policy = opts.policy ?? defaultPolicy;
    this.#upstream = opts.upstream;
    this.#onDenied = opts.onDenied;
    this.stats = opts.stats ?? newUdpRelayStats();
    this.#account = opts.account;
  }

  /** Live flows. */
  get flowCount(): number {
    return this.#flows.size;
  }

  /** Handles one DATAGRAM payload from the client. Never throws. */
  handle(data: Uint8Array): void {
    if (this.#closed || data.length === 0) return; // empty: the session-confirming datagram
    const d = decodeUdpDatagram(data);
    if (!d) {
      this.stats.malformed++;
      return;
    }
    const policy = this.#policy();
    let flow = this.#flows.get(d.flowId);
    if (!flow) {
      if (this.#flows.size >= this.#maxFlows) {
        this.stats.flowLimitDropped++;
        return;
      }
      flow = {
        id: d.flowId,
        v4: null,
        v6: null,
        lastActive: performance.now(),
        policy,
        targets: new Map(),
        targetCount: 0,
        last: null,
      };
      this.#flows.set(d.flowId, flow);
      this.stats.flowsOpened++;
      this.#sweep ??= setInterval(
        () => this.#expire(),
        Math.max(50, Math.min(5000, this.#idleMs / 4)),
      );
    }
    if (flow.policy !== policy) this.#repolicy(flow, policy);
    flow.lastActive = performance.now();
    let t = flow.last;
    if (t === null || t.port !== d.port || t.host !== d.host) {
      t = this.#target(flow, d.host, d.port);
    }
    flow.last = t;
    if (t.state === BUSY || (t.state === UNRESOLVED && performance.now() >= t.retryAt)) {
      this.#decide(flow, t);
    }
    switch (t.state) {
      case ALLOWED:
        this.#send(flow, t.address, t.toPort ?? t.port, d.payload.slice());
        return;
      case DENIED:
        this.stats.egressDenied++;
        return;
      case UNRESOLVED:
        this.stats.dnsFailed++;
        return;
      case BUSY:
        this.stats.queueDropped++;
        return;
      default:
        if (
          t.queue !== null && t.queue.length < MAX_PENDING_DATAGRAMS &&
          this.#queued < MAX_QUEUED_DATAGRAMS
        ) {
          t.queue.push(d.payload.slice());
          this.#queued++;
        } else this.stats.queueDropped++;
    }
  }

  /**
   * A reload replaced the policy: forget every decision `flow` made under the
   * old one, so each target is decided again under `policy` at its next
   * datagram. Datagrams still waiting for a lookup made under the old policy
   * are dropped (`queueDropped`); that lookup's answer is then ignored.
   */
  #repolicy(flow: Flow, policy: EgressPolicy): void {
    for (const ports of flow.targets.values()) {
      for (const t of ports.values()) {
        if (t.queue === null) continue;
        this.stats.queueDropped += t.queue.length;
        this.#queued -= t.queue.length;
        t.queue = null;
      }
    }
    flow.targets.clear();
    flow.targetCount = 0;
    flow.last = null;
    flow.policy = policy;
  }

  /** The flow's entry for `host`:`port`, decided (or being decided) on first sight. */
  #target(flow: Flow, host: string, port: number): FlowTarget {
    let ports = flow.targets.get(host);
    const known = ports?.get(port);
    if (known) return known;
    if (flow.targetCount >= MAX_FLOW_TARGETS) {
      flow.targets.clear();
      flow.targetCount = 0;
      ports = undefined;
    }
    if (!ports) flow.targets.set(host, ports = new Map());
    const t: FlowTarget = { host, port, state: PENDING, address: "", retryAt: 0, queue: null };
    ports.set(port, t);
    flow.targetCount++;
    this.#decide(flow, t);
    return t;
  }

  /** Decides `t`: at once for an address literal, after DNS for a name (datagrams queue meanwhile). */
  #decide(flow: Flow, t: FlowTarget): void {
    const addr = this.#scratch;
    if (t.port === UPSTREAM_TARGET.port && t.host === UPSTREAM_TARGET.host) {
      // An OUT mapping to ANY: the operator's --udp-upstream (an address), past the policy.
      const up = this.#upstream?.();
      if (up && parseIpInto(up.host, addr) !== 0) {
        t.state = ALLOWED;
        t.address = formatIp(addr);
        t.toPort = up.port;
      } else this.#deny(t, "the server has no default UDP upstream (--udp-upstream)", "upstream");
      return;
    }
    if (parseIpInto(t.host, addr) !== 0) {
      const d = flow.policy.check(addr, t.port);
      if (d.allowed) {
        t.state = ALLOWED;
        t.address = formatIp(addr);
      } else this.#deny(t, d.detail, d.rule);
      return;
    }
    if (this.#lookups >= MAX_LOOKUPS) {
      t.state = BUSY;
      return;
    }
    t.state = PENDING;
    t.queue = [];
    this.#lookups++;
    /** Ends the lookup; returns the datagrams that waited for it. */
    const settle = (): Uint8Array[] => {
      this.#lookups--;
      const queued = t.queue ?? [];
      t.queue = null;
      this.#queued -= queued.length;
      return queued;
    };
    const unresolved = () => {
      t.state = UNRESOLVED;
      t.retryAt = performance.now() + DNS_NEGATIVE_TTL_MS;
      this.stats.dnsFailed += settle().length;
    };
    const policy = flow.policy;
    resolveAllowed(t.host, t.port, policy, this.#lookup).then((r) => {
      // Decided under a policy a reload has replaced: `t` is forgotten (#repolicy).
      if (flow.policy !== policy) return void settle();
      if (!r.allowed && r.failure !== "denied") return unresolved();
      const queued = settle();
      if (r.allowed) {
        t.state = ALLOWED;
        t.address = r.address;
        for (const p of queued) this.#send(flow, t.address, t.port, p);
      } else {
        this.#deny(t, r.detail ?? r.reason, r.rule ?? "");
        this.stats.egressDenied += queued.length;
      }
    }, unresolved);
  }

  #deny(t: FlowTarget, detail: string, rule: string): void {
    t.state = DENIED;
    this.#onDenied?.(t.host, t.port, detail, rule);
  }

  #send(flow: Flow, host: string, port: number, payload: Uint8Array): void {
    if (this.#closed || this.#flows.get(flow.id) !== flow) return;
    const v6 = host.includes(":");
    let sock = v6 ? flow.v6 : flow.v4;
    if (!sock) {
      try {
        sock = openUdp(v6 ? "::" : "0.0.0.0", 0, { impl: "deno" });
      } catch {
        this.stats.downDropped++;
        return;
      }
      if (v6) flow.v6 = sock;
      else flow.v4 = sock;
      const s = sock;
      s.run((data, from) => this.#reply(flow, s, data, from)).catch(() => {});
    }
    sock.send(payload, { transport: "udp", hostname: host, port });
    this.stats.datagramsUp++;
    this.#account?.(payload.length, 0);
  }

  #reply(flow: Flow, sock: DatagramSocket, data: Uint8Array, from: Deno.NetAddr): void {
    if (this.#closed || (flow.v4 !== sock && flow.v6 !== sock)) return;
    flow.lastActive = performance.now();
    const m = from.hostname.match(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i);
    const host = m ? m[1] : from.hostname;
    const wire = encodeUdpDatagram(flow.id, { host, port: from.port }, data);
    if (
      !wire || wire.length > this.#conn.session.maxDatagramPayload ||
      !this.#conn.sendDatagram(wire)
    ) {
      this.stats.downDropped++;
      return;
    }
    this.stats.datagramsDown++;
    this.#account?.(0, data.length);
  }

  #expire(): void {
    const now = performance.now();
    for (const f of this.#flows.values()) {
      if (now - f.lastActive >= this.#idleMs) this.#closeFlow(f);
    }
    if (this.#flows.size === 0) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
  }

  #closeFlow(f: Flow): void {
    this.#flows.delete(f.id);
    for (const s of [f.v4, f.v6]) {
      try {
        s?.close();
      } catch { /* already closed */ }
    }
    f.v4 = f.v6 = null;
  }

  /** Closes every flow; later datagrams are ignored. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    for (const f of [...this.#flows.values()]) this.#closeFlow(f);
  }
}
