/**
 * The router as an {@link Outbound} (DESIGN "The seams": the router is an
 * outbound that picks among outbounds). Inbounds hand it every flow with its
 * {@link FlowContext}; it asks the compiled {@link Router} where the flow goes
 * and passes it on to that outbound: the tunnel, `direct`, `block`, or an
 * `http` proxy.
 *
 * Per flow, before deciding: the owning program is looked up (only when a
 * rule uses `process` and the inbound gave its connection), and under
 * `resolve: "onDemand"` a host name is resolved locally when an IP rule could
 * change the answer; a `direct` flow then connects to the address found
 * (docs/routing.md, "Resolution").
 *
 * UDP: one {@link RouterOutbound.openUdp} flow is one association (a SOCKS5
 * UDP ASSOCIATE), whose datagrams may each go somewhere else. The decision is
 * made per target, once, and kept for the flow; a sub-flow per outbound is
 * opened on its first datagram. Datagrams routed to `block` are dropped, and
 * so are those routed to an `http` outbound, which cannot carry UDP (counted,
 * and said once in the log).
 *
 * Reload: {@link RouterOutbound.swap} installs a new router and outbounds.
 * Connections already open keep the outbound they were given, and a UDP
 * association keeps the routes it started with; only new flows see the new
 * rules. Nothing is closed by a swap: replaced outbounds hold no shared state
 * beyond their own flows, which their owners close.
 * @module
 */

import { lookup } from "node:dns/promises";
import { DialError, type Duplex, type Target } from "../../shared/duplex.ts";
import { getLog } from "../../shared/log.ts";
import { parseIp } from "../../shared/net/cidr.ts";
import { formatHostPort } from "../../shared/config/types.ts";
import type { FlowContext, Outbound, UdpFlow, UdpReplyHandler } from "../outbound/outbound.ts";
import type { OutboundType } from "./config.ts";
import type { InboundConn, RouteDecision } from "./flow.ts";
import type { ProcessResolver } from "./process.ts";
import type { Router, RuleHits } from "./rules.ts";

const log = getLog("client.router");

/** An outbound the router may pick, with what kind of outbound it is. */
export interface OutboundEntry {
  /** The outbound itself. */
  outbound: Outbound;
  /** Its type: how the router treats UDP for it and whether it dials resolved addresses. */
  type: OutboundType;
}

/** What the router outbound routes with; {@link RouterOutbound.swap} replaces it whole. */
export interface RouteTable {
  /** The compiled rules. */
  router: Router;
  /** Every outbound a rule or the default may name, by name. */
  outbounds: ReadonlyMap<string, OutboundEntry>;
}

/** Resolves a host name to one IP address literal (`onDemand` resolution). */
export type NameResolver = (name: string) => Promise<string>;

/** Options of {@link RouterOutbound}. */
export interface RouterOutboundOptions {
  /**
   * Finds the program behind a flow's connection, for process rules; absent
   * or null: process rules match no flow (unless the inbound set `process`).
   */
  processResolver?: ProcessResolver | null;
  /** Resolves names under `resolve: "onDemand"`; default the system resolver (`node:dns`). */
  resolveName?: NameResolver;
}

/** UDP counters of the router outbound. */
export interface RouterUdpStats {
  /** UDP flows (associations) opened. */
  flows: number;
  /** Datagrams dropped because their target is routed to a `block` outbound. */
  blocked: number;
  /** Datagrams dropped because their target is routed to an `http` outbound (TCP only). */
  noUdp: number;
  /** Datagrams dropped because their outbound could not open a flow or queue them. */
  failed: number;
}

/** What the stats report about routing. */
export interface RouteStats {
  /** Hits per rule, then the default (since the last reload). */
  rules: RuleHits[];
  /** UDP counters (since start). */
  udp: RouterUdpStats;
}

/** Targets one UDP flow remembers decisions for; past this the memory starts afresh. */
export const UDP_TARGETS_MAX = 1024;
/**
 * Name lookups (`resolve: "onDemand"`) one UDP association may have in flight;
 * a datagram to yet another name is dropped (counted as failed) and its
 * target decided on a later datagram, so a flood of names cannot start a
 * flood of DNS queries.
 */
export const UDP_LOOKUPS_MAX = 16;
/** Datagrams held per sub-flow while it opens, or per target while its name resolves. */
export const UDP_PENDING_MAX = 16;
/** After a sub-flow failed to open, its datagrams are dropped for this long, ms. */
export const UDP_RETRY_MS = 1000;

const defaultResolveName: NameResolver = async (name) => (await lookup(name)).address;

/** Whether any rule of `router` matches on the process (then flows' programs are looked up). */
export function routerUsesProcess(router: Router): boolean {
  return router.rules.some((r) => (r.match.process?.length ?? 0) > 0);
}

/** A route table with what the router outbound derives from it once. */
class Routes {
  readonly router: Router;
  readonly outbounds: ReadonlyMap<string, OutboundEntry>;
  /** Whether any rule matches on the process (then flows' programs are looked up). */
  readonly usesProcess: boolean;

  constructor(table: RouteTable) {
    this.router = table.router;
    this.outbounds = table.outbounds;
    this.usesProcess = routerUsesProcess(table.router);
  }

  /** The entry for `name`. @throws {DialError} "general" when there is none. */
  entry(name: string): OutboundEntry {
    const e = this.outbounds.get(name);
    if (e === undefined) throw new DialError("general", `no outbound named "${name}"`);
    return e;
  }
}

/** One routed flow: where it goes and the context its outbound gets. */
interface Routed {
  decision: RouteDecision;
  entry: OutboundEntry;
  /** The context for the outbound (target replaced by the resolved address for `direct`). */
  ctx: FlowContext;
}

/** Counts a provisional decision as final (its name could not be resolved). */
function countHit(router: Router, d: RouteDecision): void {
  if (d.rule < 0) router.defaultHits++;
  else router.hits[d.rule]++;
}

/** Picks an outbound per flow from the rules and hands the flow to it. */
export class RouterOutbound implements Outbound {
  /** The outbound's name. */
  readonly name = "router";
  /** UDP counters. */
  readonly udpStats: RouterUdpStats = { flows: 0, blocked: 0, noUdp: 0, failed: 0 };
  #routes: Routes;
  #processResolver: ProcessResolver | null;
  readonly #resolveName: NameResolver;
  #processWarned = false;
  /** Outbound names whose "cannot carry UDP" was logged, per route table. */
  #noUdpLogged = new Set<string>();

  /** Routes with `table` until {@link swap}. */
  constructor(table: RouteTable, options: RouterOutboundOptions = {}) {
    this.#routes = new Routes(table);
    this.#processResolver = options.processResolver ?? null;
    this.#resolveName = options.resolveName ?? defaultResolveName;
  }

  /** The router in force. */
  get router(): Router {
    return this.#routes.router;
  }

  /** The outbounds in force, by name. */
  get outbounds(): ReadonlyMap<string, OutboundEntry> {
    return this.#routes.outbounds;
  }

  /** Whether the rules in force look at the process. */
  get usesProcess(): boolean {
    return this.#routes.usesProcess;
  }

  /**
   * Installs new rules and outbounds for the flows that start from now on;
   * flows already open keep theirs. `processResolver` replaces the resolver
   * when given (null removes it), else the current one stays.
   */
  swap(table: RouteTable, processResolver?: ProcessResolver | null): void {
    this.#routes = new Routes(table);
    if (processResolver !== undefined) this.#processResolver = processResolver;
    this.#noUdpLogged = new Set();
  }

  /** Sets (or with null removes) the process resolver for the flows that start from now on. */
  setProcessResolver(resolver: ProcessResolver | null): void {
    this.#processResolver = resolver;
  }

  /** Hit counters of the router in force and the UDP counters. */
  stats(): RouteStats {
    return { rules: this.#routes.router.stats(), udp: { ...this.udpStats } };
  }

  /**
   * Routes a TCP flow and opens it through the chosen outbound.
   * @throws {DialError} from that outbound ("denied" for `block`).
   */
  dial(ctx: FlowContext, signal?: AbortSignal): Promise<Duplex> {
    const routes = this.#routes;
    if (routes.usesProcess || routes.router.resolve === "onDemand") {
      return this.#dialAsync(routes, ctx, signal);
    }
    // The common case decides synchronously: no promise of the router's own.
    let r: Routed;
    try {
      r = this.#routed(routes, ctx, routes.router.decide(ctx), ctx, undefined);
    } catch (e) {
      return Promise.reject(e);
    }
    return r.entry.outbound.dial(r.ctx, signal);
  }

  async #dialAsync(routes: Routes, ctx: FlowContext, signal?: AbortSignal): Promise<Duplex> {
    const r = await this.#route(routes, await this.#withProcess(routes, ctx));
    return await r.entry.outbound.dial(r.ctx, signal);
  }

  /**
   * Opens a UDP flow that routes each datagram by its target (see the module
   * comment). Resolves at once (after the process lookup, when rules need
   * it): the outbounds' flows open on their first datagram.
   */
  async openUdp(ctx: FlowContext, onReply: UdpReplyHandler): Promise<UdpFlow> {
    const routes = this.#routes;
    const base = await this.#withProcess(routes, ctx);
    this.udpStats.flows++;
    return new RouterUdpFlow(this, routes, base, onReply);
  }

  /** Closes the outbounds in force (their UDP flows still open). */
  async close(): Promise<void> {
    const seen = new Set<Outbound>();
    for (const e of this.#routes.outbounds.values()) {
      if (seen.has(e.outbound)) continue;
      seen.add(e.outbound);
      try {
        await e.outbound.close?.();
      } catch (err) {
        log.debug("closing outbound {name}: {error}", {
          name: e.outbound.name,
          error: String(err),
        });
      }
    }
  }

  /** `ctx` with `process` filled in when the rules need it and the inbound gave its connection. */
  async #withProcess(routes: Routes, ctx: FlowContext): Promise<FlowContext> {
    if (!routes.usesProcess || ctx.process !== undefined || ctx.conn === undefined) return ctx;
    const name = await this.#lookupProcess(ctx.conn);
    return name === undefined ? ctx : { ...ctx, process: name };
  }

  async #lookupProcess(conn: InboundConn): Promise<string | undefined> {
    const resolver = this.#processResolver;
    if (resolver === null) return undefined;
    try {
      const info = await resolver.lookup({
        network: conn.network,
        local: conn.peer,
        remote: conn.local,
      });
      return info?.name;
    } catch (e) {
      if (!this.#processWarned) {
        this.#processWarned = true;
        log.warn("process lookup failed, process rules match no flow: {error}", {
          error: e instanceof Error ? e.message : String(e),
        });
      }
      return undefined;
    }
  }

  /** Decides `ctx`, resolving its name first when `onDemand` says so. */
  async #route(routes: Routes, ctx: FlowContext): Promise<Routed> {
    const router = routes.router;
    let d = router.decide(ctx);
    let out = ctx;
    let resolved: string | undefined;
    if (d.needsIp && router.resolve === "onDemand") {
      const ip = await this.resolveAddress(ctx.target.host);
      if (ip !== null) {
        resolved = ip.text;
        out = { ...ctx, ip: ip.bytes };
        d = router.decide(out);
      } else countHit(router, d);
    }
    return this.#routed(routes, ctx, d, out, resolved);
  }

  /**
   * The outbound of decision `d` and the context it gets (`out`, with the
   * target replaced by `resolved` for `direct`).
   * @throws {DialError} when the decision names no outbound of the table.
   */
  #routed(
    routes: Routes,
    ctx: FlowContext,
    d: RouteDecision,
    out: FlowContext,
    resolved: string | undefined,
  ): Routed {
    const router = routes.router;
    const entry = routes.entry(d.outbound);
    if (resolved !== undefined && entry.type === "direct") {
      out = { ...out, target: { host: resolved, port: ctx.target.port } };
    }
    if (log.isEnabledFor("debug")) {
      log.debug("{network} {target} from {inbound}{process}: {rule} → {outbound}", {
        network: ctx.network,
        target: formatHostPort(ctx.target),
        inbound: ctx.inbound,
        process: out.process === undefined ? "" : ` (${out.process})`,
        rule: router.label(d.rule),
        outbound: d.outbound,
      });
    }
    return { decision: d, entry, ctx: out };
  }

  /**
   * Resolves `host` with the name resolver: its text and 16-byte form, or
   * null when it does not resolve (to an IP address).
   */
  async resolveAddress(host: string): Promise<{ text: string; bytes: Uint8Array } | null> {
    try {
      const text = await this.#resolveName(host);
      const bytes = parseIp(text);
      return bytes === null ? null : { text, bytes };
    } catch {
      return null;
    }
  }

  /** Logs once per route table that outbound `name` dropped UDP. */
  noteNoUdp(name: string, target: Target): void {
    if (this.#noUdpLogged.has(name)) return;
    this.#noUdpLogged.add(name);
    log.warn(
      "udp datagrams to {target} dropped: they are routed to outbound {name}, an http proxy, " +
        "which cannot carry UDP",
      { target: formatHostPort(target), name },
    );
  }
}

/** A datagram held until its sub-flow opens or its target's name resolves. */
interface Held {
  target: Target;
  data: Uint8Array;
}

/** What a sub-flow does with datagrams. */
const SUB_SEND = 0;
const SUB_BLOCK = 1;
const SUB_NO_UDP = 2;

/** The flow of one outbound within a router UDP flow. */
class SubFlow {
  flow: UdpFlow | null = null;
  opening = false;
  /** Datagrams waiting while the flow opens. */
  held: Held[] = [];
  /** `performance.now()` before which a failed open is not retried. */
  failedUntil = 0;
  constructor(readonly name: string, readonly entry: OutboundEntry, readonly mode: number) {}
}

/** Where the datagrams to one target go. */
interface TargetRoute {
  /** The sub-flow; null while the target's name is being resolved. */
  sub: SubFlow | null;
  /** The target datagrams are sent to (the resolved address for `direct` under onDemand). */
  sendTo: Target;
  /** Datagrams waiting for the name's resolution. */
  resolving: Uint8Array[] | null;
}

/** One UDP association routed per datagram target. */
class RouterUdpFlow implements UdpFlow {
  readonly #owner: RouterOutbound;
  readonly #routes: Routes;
  readonly #ctx: FlowContext;
  readonly #onReply: UdpReplyHandler;
  readonly #subs = new Map<string, SubFlow>();
  readonly #targets = new Map<string, TargetRoute>();
  /** The last target seen and its route: most flows talk to one target. */
  #lastHost = "";
  #lastPort = -1;
  #last: TargetRoute | null = null;
  #lookups = 0;
  #closed = false;

  constructor(
    owner: RouterOutbound,
    routes: Routes,
    ctx: FlowContext,
    onReply: UdpReplyHandler,
  ) {
    this.#owner = owner;
    this.#routes = routes;
    this.#ctx = ctx;
    this.#onReply = onReply;
  }

  send(target: Target, data: Uint8Array): boolean {
    if (this.#closed) return false;
    let tr = this.#last;
    if (tr === null || target.port !== this.#lastPort || target.host !== this.#lastHost) {
      const key = `${target.port} ${target.host}`;
      const known = this.#targets.get(key) ?? this.#decide(key, target);
      if (known === null) return this.#failed();
      tr = known;
      this.#last = tr;
      this.#lastHost = target.host;
      this.#lastPort = target.port;
    }
    if (tr.resolving !== null) {
      if (tr.resolving.length >= UDP_PENDING_MAX) return this.#failed();
      tr.resolving.push(data.slice());
      return true;
    }
    return this.#sendVia(tr.sub!, tr.sendTo, data);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#subs.values()) {
      s.held.length = 0;
      s.flow?.close();
      s.flow = null;
    }
    this.#subs.clear();
    this.#targets.clear();
    this.#last = null;
  }

  #failed(): false {
    this.#owner.udpStats.failed++;
    return false;
  }

  /**
   * Decides the route of a new target (and remembers it); null when it needs
   * a name lookup and {@link UDP_LOOKUPS_MAX} are already in flight.
   */
  #decide(key: string, target: Target): TargetRoute | null {
    const t: Target = { host: target.host, port: target.port };
    const ctx: FlowContext = { ...this.#ctx, network: "udp", target: t };
    const router = this.#routes.router;
    const d = router.decide(ctx); // a provisional (needsIp) answer is not counted
    const lookup = d.needsIp && router.resolve === "onDemand";
    if (lookup && this.#lookups >= UDP_LOOKUPS_MAX) return null;
    if (this.#targets.size >= UDP_TARGETS_MAX) this.#targets.clear();
    let tr: TargetRoute;
    if (lookup) {
      tr = { sub: null, sendTo: t, resolving: [] };
      this.#lookups++;
      void this.#resolve(tr, ctx, d).finally(() => this.#lookups--);
    } else tr = { sub: this.#subFor(d.outbound), sendTo: t, resolving: null };
    this.#targets.set(key, tr);
    return tr;
  }

  /** Resolves the target's name, decides again, and sends what waited. */
  async #resolve(tr: TargetRoute, ctx: FlowContext, first: RouteDecision): Promise<void> {
    const router = this.#routes.router;
    const ip = await this.#owner.resolveAddress(ctx.target.host);
    let d = first;
    if (ip !== null) d = router.decide({ ...ctx, ip: ip.bytes });
    else countHit(router, d);
    if (this.#closed) return;
    const sub = this.#subFor(d.outbound);
    if (ip !== null && sub.entry.type === "direct") {
      tr.sendTo = { host: ip.text, port: ctx.target.port };
    }
    const waiting = tr.resolving ?? [];
    tr.resolving = null;
    tr.sub = sub;
    for (const data of waiting) this.#sendVia(sub, tr.sendTo, data);
  }

  /** The sub-flow of outbound `name`, made on first use. */
  #subFor(name: string): SubFlow {
    let s = this.#subs.get(name);
    if (s !== undefined) return s;
    const entry = this.#routes.outbounds.get(name) ??
      { outbound: BLOCK_UNKNOWN, type: "block" as const };
    const mode = entry.type === "block" ? SUB_BLOCK : entry.type === "http" ? SUB_NO_UDP : SUB_SEND;
    s = new SubFlow(name, entry, mode);
    this.#subs.set(name, s);
    return s;
  }

  #sendVia(sub: SubFlow, target: Target, data: Uint8Array): boolean {
    const flow = sub.flow;
    if (flow !== null) return flow.send(target, data);
    const stats = this.#owner.udpStats;
    if (sub.mode === SUB_BLOCK) {
      stats.blocked++;
      return false;
    }
    if (sub.mode === SUB_NO_UDP) {
      stats.noUdp++;
      this.#owner.noteNoUdp(sub.name, target);
      return false;
    }
    if (!sub.opening) {
      if (performance.now() < sub.failedUntil) return this.#failed();
      this.#open(sub);
    }
    if (sub.held.length >= UDP_PENDING_MAX) return this.#failed();
    sub.held.push({ target, data: data.slice() });
    return true;
  }

  #open(sub: SubFlow): void {
    sub.opening = true;
    sub.entry.outbound.openUdp(this.#ctx, this.#onReply).then(
      (flow) => {
        sub.opening = false;
        if (this.#closed) {
          flow.close();
          return;
        }
        sub.flow = flow;
        const held = sub.held;
        sub.held = [];
        for (const h of held) flow.send(h.target, h.data);
      },
      (e) => {
        sub.opening = false;
        sub.failedUntil = performance.now() + UDP_RETRY_MS;
        this.#owner.udpStats.failed += sub.held.length;
        sub.held = [];
        log.debug("udp flow through outbound {name} not opened: {error}", {
          name: sub.name,
          error: e instanceof Error ? e.message : String(e),
        });
      },
    );
  }
}

/** Stands in for an outbound a decision names but the table lacks (never, with a valid config). */
const BLOCK_UNKNOWN: Outbound = {
  name: "unknown",
  dial: () => Promise.reject(new DialError("general", "no such outbound")),
  openUdp: () => Promise.reject(new DialError("general", "no such outbound")),
};
