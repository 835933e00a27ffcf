/**
 * The client's port mappings (docs/mappings.md):
 *
 * - OUT TCP: a local listener; each connection goes through the router
 *   (inbound "mapping") to the target — or, for `ANY`, through the tunnel to
 *   the server's default upstream.
 * - OUT UDP: a local socket; each source address is a flow through the
 *   router's UDP path (idle flows closed after 60 s).
 * - IN: the control stream (held on one session, opened again whenever it
 *   ends: a restarted server gets its listeners back) asks the server to
 *   listen; the streams and kind-3 datagrams it sends are connected to the
 *   local targets.
 *
 * Events for embedding programs: each mapping up and down, with a reason,
 * and per-mapping byte counters in {@link ClientMappings.stats}.
 * @module
 */

import type { Duplex, Target } from "../../shared/duplex.ts";
import { BufferedReader, closeQuietly, encodeLatin1, relay, writeAll } from "../../shared/pipe.ts";
import { getLog } from "../../shared/log.ts";
import { formatEndpoint, type Mapping } from "../../shared/config/mapping_config.ts";
import type { Connection, OstpStream } from "../../shared/session/connection.ts";
import {
  encodeMapDatagram,
  encodeMapRequest,
  MAP_LINE_MAX,
  type MapResponse,
  parseMapDatagram,
  parseMapResponse,
  readInStreamHeader,
  UPSTREAM_TARGET,
} from "../../shared/wire/mapping.ts";
import { readExact } from "../../shared/wire/open.ts";
import type { Outbound, UdpFlow } from "../outbound/outbound.ts";
import type { OstpPool } from "../outbound/ostp.ts";

/** The control line's bytes (read as Latin-1 by `BufferedReader.readLine`) are UTF-8. */
const utf8 = new TextDecoder();

const log = getLog("mapping");

/** Idle time after which a UDP flow of a mapping is closed, ms. */
const UDP_IDLE_MS = 60_000;
/** Most UDP flows (source addresses) per OUT mapping. */
const MAX_UDP_FLOWS = 256;
/** Pause before the control stream is opened again after it ended, ms. */
const CONTROL_RETRY_MS = 1000;

/** One source address of an OUT UDP mapping: its flow once open, and when it was last used. */
interface OutUdpFlow {
  flow: Promise<UdpFlow | null>;
  ready: UdpFlow | null;
  last: number;
}

/** A mapping's state change, for embedding programs. */
export interface MappingEvent {
  /** The mapping's id and spec. */
  id: number;
  spec: string;
  /** Up (listening / registered) or down (with the reason). */
  state: "up" | "down";
  detail: string;
}

/** Counters of one mapping. */
export interface MappingStats {
  id: number;
  spec: string;
  proto: "tcp" | "udp";
  mode: "OUT" | "IN";
  state: "up" | "down";
  /** Bytes from the local side into the tunnel. */
  bytesUp: number;
  /** Bytes from the tunnel to the local side. */
  bytesDown: number;
  /** TCP connections or UDP flows carried. */
  flows: number;
}

interface Live {
  m: Mapping;
  stats: MappingStats;
  close?: () => void;
}

/** What {@link ClientMappings} needs. */
export interface MappingDeps {
  pool: OstpPool;
  /** The router (OUT mappings go through it). */
  router: Outbound;
  /** Mapping state changes. */
  onEvent?: (e: MappingEvent) => void;
}

/** Every mapping of a client. */
export class ClientMappings {
  private readonly live = new Map<number, Live>();
  private stopped = false;
  private control: Duplex | null = null;
  private controlLoop: Promise<void> | null = null;
  /** IN UDP flows: `id|flow` → local socket. */
  private readonly inUdp = new Map<
    string,
    { sock: Deno.DatagramConn; last: number; conn: Connection }
  >();
  private sweep: ReturnType<typeof setInterval> | undefined;

  constructor(mappings: readonly Mapping[], private readonly deps: MappingDeps) {
    for (const m of mappings) {
      this.live.set(m.id, {
        m,
        stats: {
          id: m.id,
          spec: m.spec,
          proto: m.proto,
          mode: m.mode,
          state: "down",
          bytesUp: 0,
          bytesDown: 0,
          flows: 0,
        },
      });
    }
  }

  /** Opens the OUT listeners and starts the control exchange when IN (or ANY) mappings need it. */
  start(): void {
    this.deps.pool.onPeerStream = (conn, st) => void this.onInStream(conn, st);
    this.deps.pool.onMapDatagram = (conn, d) => this.onInDatagram(conn, d);
    for (const l of this.live.values()) {
      if (l.m.mode === "OUT") this.openOut(l);
    }
    const needControl = [...this.live.values()].some((l) =>
      l.m.mode === "IN" || l.m.remote === "ANY"
    );
    if (needControl) this.controlLoop = this.runControl();
    this.sweep = setInterval(() => this.expireInUdp(), 5000);
  }

  /** Per-mapping counters. */
  stats(): MappingStats[] {
    return [...this.live.values()].map((l) => ({ ...l.stats }));
  }

  /** Closes every listener and flow. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweep);
    for (const l of this.live.values()) {
      l.close?.();
      l.close = undefined;
    }
    closeQuietly(this.control);
    for (const f of this.inUdp.values()) f.sock.close();
    this.inUdp.clear();
    await this.controlLoop?.catch(() => {});
  }

  private setState(l: Live, state: "up" | "down", detail: string): void {
    if (l.stats.state === state && state === "up") return;
    l.stats.state = state;
    const line = `${l.m.proto} mapping ${l.m.spec}: ${state} (${detail})`;
    if (state === "up") log.info(line);
    else log.warn(line);
    this.deps.onEvent?.({ id: l.m.id, spec: l.m.spec, state, detail });
  }

  // ------------------------------------------------------------------ OUT

  private target(m: Mapping): Target {
    return m.remote === "ANY" ? { ...UPSTREAM_TARGET } : { ...m.remote };
  }

  private openOut(l: Live): void {
    const m = l.m;
    try {
      if (m.proto === "tcp") {
        const ln = Deno.listen({ hostname: m.local.host, port: m.local.port, transport: "tcp" });
        l.close = () => {
          try {
            ln.close();
          } catch {
            // closed
          }
        };
        void this.acceptOut(l, ln);
      } else {
        const sock = Deno.listenDatagram({
          hostname: m.local.host,
          port: m.local.port,
          transport: "udp",
        });
        const flows = new Map<string, OutUdpFlow>();
        const timer = setInterval(() => {
          const now = performance.now();
          for (const [k, f] of flows) {
            if (now - f.last > UDP_IDLE_MS) {
              flows.delete(k);
              f.flow.then((x) => x?.close());
            }
          }
        }, 5000);
        l.close = () => {
          clearInterval(timer);
          try {
            sock.close();
          } catch {
            // closed
          }
          for (const f of flows.values()) f.flow.then((x) => x?.close());
          flows.clear();
        };
        void this.udpOut(l, sock, flows);
      }
      this.setState(l, "up", `listening on ${formatEndpoint(m.local)}`);
    } catch (e) {
      this.setState(
        l,
        "down",
        `cannot listen on ${formatEndpoint(m.local)}: ${(e as Error).message}`,
      );
    }
  }

  private async acceptOut(l: Live, ln: Deno.Listener): Promise<void> {
    try {
      for await (const c of ln) void this.carryOut(l, c);
    } catch {
      // closed
    }
  }

  private async carryOut(l: Live, c: Deno.Conn): Promise<void> {
    const m = l.m;
    const peer = c.remoteAddr as Deno.NetAddr;
    const local = c.localAddr as Deno.NetAddr;
    let up: Duplex;
    try {
      const target = this.target(m);
      up = m.remote === "ANY" ? await this.deps.pool.dial(target) : await this.deps.router.dial({
        inbound: "mapping",
        network: "tcp",
        target,
        source: { host: peer.hostname, port: peer.port },
        conn: {
          network: "tcp",
          peer: { host: peer.hostname, port: peer.port },
          local: { host: local.hostname, port: local.port },
        },
      });
    } catch (e) {
      log.warn("tcp mapping {spec}: {error}", { spec: m.spec, error: (e as Error).message });
      closeQuietly(c);
      return;
    }
    l.stats.flows++;
    try {
      await relay(c, up, {
        onBytes: (u, d) => {
          l.stats.bytesUp += u;
          l.stats.bytesDown += d;
        },
      });
    } catch {
      // reset: both closed
    }
  }

  private async udpOut(
    l: Live,
    sock: Deno.DatagramConn,
    flows: Map<string, OutUdpFlow>,
  ): Promise<void> {
    const m = l.m;
    const target = this.target(m);
    try {
      for await (const [data, from] of sock) {
        const a = from as Deno.NetAddr;
        const key = `${a.hostname}|${a.port}`;
        let f = flows.get(key);
        if (!f) {
          if (flows.size >= MAX_UDP_FLOWS) continue;
          const onReply = (_from: Target, reply: Uint8Array) => {
            l.stats.bytesDown += reply.length;
            const e = flows.get(key);
            if (e) e.last = performance.now();
            sock.send(reply.slice(), a).catch(() => {});
          };
          const src = { host: a.hostname, port: a.port };
          const opened = m.remote === "ANY"
            ? this.deps.pool.openUdpFlow(onReply)
            : this.deps.router.openUdp(
              { inbound: "mapping", network: "udp", target, source: src },
              onReply,
            );
          const entry: OutUdpFlow = {
            flow: opened.then((x) => (entry.ready = x), (e) => {
              log.warn("udp mapping {spec}: {error}", {
                spec: m.spec,
                error: (e as Error).message,
              });
              flows.delete(key);
              return null;
            }),
            ready: null,
            last: performance.now(),
          };
          f = entry;
          flows.set(key, f);
          l.stats.flows++;
        }
        f.last = performance.now();
        l.stats.bytesUp += data.length;
        // Each receive is a fresh buffer, and the flow encodes what it sends: no copy here; only
        // a flow's first datagrams wait for it to open.
        (f.ready ?? await f.flow)?.send(target, data);
      }
    } catch {
      // closed
    }
  }

  // ------------------------------------------------------------------- IN

  /** Keeps the control stream open on some session; opens it again whenever it ends. */
  private async runControl(): Promise<void> {
    const inList = [...this.live.values()].filter((l) => l.m.mode === "IN");
    while (!this.stopped) {
      let stream: Duplex | null = null;
      try {
        ({ stream } = await this.deps.pool.openMapControl());
        this.control = stream;
        await writeAll(
          stream,
          encodeMapRequest(inList.map((l) => ({
            id: l.m.id,
            proto: l.m.proto,
            listen: formatEndpoint(l.m.remote),
          }))),
        );
        const reader = new BufferedReader(stream);
        const line = await reader.readLine(MAP_LINE_MAX);
        if (line === null) throw new Error("the server closed the mapping control stream");
        const r = parseMapResponse(utf8.decode(encodeLatin1(line)));
        if (typeof r === "string") throw new Error(`bad answer from the server: ${r}`);
        this.applyResponse(r);
        // Registered until the stream ends (the session went, or the server).
        const buf = new Uint8Array(256);
        while ((await reader.read(buf)) !== null) { /* the server says nothing more */ }
      } catch (e) {
        if (!this.stopped) {
          log.debug("mapping control stream: {error}", { error: (e as Error).message });
        }
      } finally {
        closeQuietly(stream);
        this.control = null;
      }
      if (this.stopped) return;
      for (const l of inList) {
        if (l.stats.state === "up") {
          this.setState(l, "down", "the session ended; registering again");
        }
      }
      await new Promise((r) => setTimeout(r, CONTROL_RETRY_MS));
    }
  }

  private applyResponse(r: MapResponse): void {
    for (const a of r.in) {
      const l = this.live.get(a.id);
      if (!l || l.m.mode !== "IN") continue;
      if (a.ok) this.setState(l, "up", `the server listens on ${a.bound}`);
      else this.setState(l, "down", `refused by the server: ${a.reason}`);
    }
    for (const l of this.live.values()) {
      if (l.m.mode !== "OUT" || l.m.remote !== "ANY") continue;
      const has = l.m.proto === "tcp" ? r.upstream.tcp : r.upstream.udp;
      if (!has && l.close) {
        l.close();
        l.close = undefined;
        this.setState(
          l,
          "down",
          `refused: the server has no default ${l.m.proto.toUpperCase()} upstream ` +
            `(--${l.m.proto}-upstream)`,
        );
      } else if (has && !l.close) this.openOut(l);
    }
  }

  private async onInStream(conn: Connection, st: OstpStream): Promise<void> {
    void conn;
    const h = await readInStreamHeader((n) => readExact((p) => st.read(p), n)).catch(() =>
      "stream reset"
    );
    if (typeof h === "string") {
      log.debug("a server stream without a valid mapping header: {why}", { why: h });
      st.reset();
      return;
    }
    const l = this.live.get(h.id);
    if (!l || l.m.mode !== "IN" || l.m.proto !== "tcp") {
      st.reset();
      return;
    }
    let local: Deno.TcpConn;
    try {
      local = await Deno.connect({ hostname: l.m.local.host, port: l.m.local.port });
    } catch (e) {
      log.warn("tcp mapping {spec}: cannot reach {target}: {error}", {
        spec: l.m.spec,
        target: formatEndpoint(l.m.local),
        error: (e as Error).message,
      });
      st.reset();
      return;
    }
    l.stats.flows++;
    try {
      await relay(local, st, {
        onBytes: (u, d) => {
          l.stats.bytesUp += u;
          l.stats.bytesDown += d;
        },
      });
    } catch {
      // reset
    }
  }

  private onInDatagram(conn: Connection, payload: Uint8Array): void {
    const d = parseMapDatagram(payload);
    if (!d) return;
    const l = this.live.get(d.id);
    if (!l || l.m.mode !== "IN" || l.m.proto !== "udp") return;
    const key = `${d.id}|${d.flow}`;
    let f = this.inUdp.get(key);
    if (!f) {
      if (this.inUdp.size >= MAX_UDP_FLOWS * 4) return;
      const v6 = l.m.local.host.includes(":");
      let sock: Deno.DatagramConn;
      try {
        sock = Deno.listenDatagram({
          transport: "udp",
          hostname: v6 ? "::" : "0.0.0.0",
          port: 0,
        });
      } catch {
        return;
      }
      f = { sock, last: performance.now(), conn };
      this.inUdp.set(key, f);
      l.stats.flows++;
      const entry = f;
      const id = d.id;
      const flow = d.flow;
      void (async () => {
        try {
          for await (const [reply] of sock) {
            entry.last = performance.now();
            l.stats.bytesUp += reply.length;
            entry.conn.sendDatagram(encodeMapDatagram(id, flow, reply));
          }
        } catch {
          // closed
        }
      })();
    }
    f.last = performance.now();
    f.conn = conn;
    l.stats.bytesDown += d.payload.length;
    f.sock.send(d.payload.slice(), {
      transport: "udp",
      hostname: l.m.local.host,
      port: l.m.local.port,
    }).catch(() => {});
  }

  private expireInUdp(): void {
    const now = performance.now();
    for (const [k, f] of this.inUdp) {
      if (now - f.last > UDP_IDLE_MS) {
        this.inUdp.delete(k);
        f.sock.close();
      }
    }
  }
}
