/**
 * The server's half of port mappings (docs/mappings.md), per session:
 *
 * - OUT to `ANY`: a stream opened to the reserved upstream target goes to
 *   `--tcp-upstream` (the operator's explicit choice: not the egress policy's
 *   to refuse); UDP datagrams to it go to `--udp-upstream` (`udp_relay.ts`).
 * - IN: the client's control stream names its IN mappings; each one whose
 *   port the key may open (`allowInPorts`, server-wide and per user) gets a
 *   listener on loopback or an unspecified address. A TCP connection it
 *   accepts becomes a stream the server opens towards the client; a UDP
 *   source becomes a flow of kind-3 datagrams. Listeners close with the
 *   control stream or the session, and come back when the client's next
 *   session asks again.
 * @module
 */

import { type Dialer, DialError, type Duplex, type Target } from "../shared/duplex.ts";
import {
  BufferedReader,
  closeQuietly,
  duplexPair,
  encodeLatin1,
  relay,
  writeAll,
} from "../shared/pipe.ts";
import type { Connection } from "../shared/session/connection.ts";
import { formatHostPort, type HostPort, parseHostPort } from "../shared/config/types.ts";
import { isInListenHost } from "../shared/config/mapping_config.ts";
import { PortSet } from "../shared/config/port_set.ts";
import {
  encodeInStreamHeader,
  encodeMapDatagram,
  encodeMapResponse,
  type InAnswer,
  type InRequest,
  isMapControlTarget,
  isUpstreamTarget,
  MAP_LINE_MAX,
  parseMapDatagram,
  parseMapRequest,
} from "../shared/wire/mapping.ts";
import { connectTcp } from "../shared/carrier/uot.ts";
import type { ServerConfig } from "../shared/config/types.ts";
import { keyHex } from "./users.ts";

/** The control line's bytes (read as Latin-1 by `BufferedReader.readLine`) are UTF-8. */
const utf8 = new TextDecoder();

/** What a session's mappings may do. */
export interface MappingPolicy {
  /** The default TCP upstream, if any. */
  tcpUpstream?: HostPort;
  /** The default UDP upstream (an address), if any. */
  udpUpstream?: HostPort;
  /** Ports IN mappings of this session's key may open. */
  allowInPorts: PortSet;
  /** Connect timeout for the TCP upstream, ms. */
  connectTimeoutMs: number;
}

/** Builds the policy of a key from the config's fields (server-wide and the user's). */
export function mappingPolicy(
  cfg: {
    tcpUpstream?: HostPort;
    udpUpstream?: HostPort;
    allowInPorts: [number, number][];
    connectTimeout: number;
  },
  userPorts?: [number, number][],
): MappingPolicy {
  let ports = PortSet.of(cfg.allowInPorts);
  if (userPorts) ports = ports.union(PortSet.of(userPorts));
  const p: MappingPolicy = { allowInPorts: ports, connectTimeoutMs: cfg.connectTimeout * 1000 };
  if (cfg.tcpUpstream) p.tcpUpstream = cfg.tcpUpstream;
  if (cfg.udpUpstream) p.udpUpstream = cfg.udpUpstream;
  return p;
}

const byConfig = new WeakMap<object, Map<string, MappingPolicy>>();

/**
 * The policy of the key `hex` under `cfg` (its user's `allowInPorts` added
 * to the server's), cached per config object (a reload makes a new one).
 */
export function mappingPolicyForKey(cfg: ServerConfig, hex: string): MappingPolicy {
  let m = byConfig.get(cfg);
  if (!m) {
    m = new Map();
    for (const u of cfg.users) m.set(keyHex(u.key), mappingPolicy(cfg, u.allowInPorts));
    byConfig.set(cfg, m);
  }
  let p = m.get(hex);
  if (!p) {
    p = mappingPolicy(cfg);
    m.set(hex, p);
  }
  return p;
}

/** Idle time after which an IN UDP flow is forgotten, ms. */
const UDP_FLOW_IDLE_MS = 60_000;
/** Most flows per IN UDP mapping. */
const MAX_UDP_FLOWS = 256;

/** One source address at an IN UDP listener. */
interface InUdpFlow {
  flow: number;
  addr: Deno.NetAddr;
  key: string;
  /** Last datagram either way, performance.now(). */
  last: number;
}

interface InUdp {
  id: number;
  sock: Deno.DatagramConn;
  /** The same flows by source ("host|port") and by flow id. */
  bySource: Map<string, InUdpFlow>;
  byFlow: Map<number, InUdpFlow>;
  nextFlow: number;
}

/** One session's mappings. */
export class SessionMappings {
  private readonly tcpListeners = new Map<number, Deno.Listener>();
  private readonly udp = new Map<number, InUdp>();
  private sweep: ReturnType<typeof setInterval> | undefined;
  private closed = false;
  /** Counters for the status. */
  readonly stats = { inOpened: 0, inRefused: 0, inConnections: 0, inDatagrams: 0 };

  constructor(
    private readonly conn: Connection,
    private readonly policy: () => MappingPolicy,
    private readonly account: (up: number, down: number) => void,
    private readonly log: (message: string) => void,
  ) {}

  /** The session's dialer with the control stream and the upstream target handled here. */
  dialerFor(inner: Dialer): Dialer {
    return async (target: Target, signal?: AbortSignal): Promise<Duplex> => {
      if (isMapControlTarget(target)) return this.openControl();
      if (isUpstreamTarget(target)) {
        const up = this.policy().tcpUpstream;
        if (!up) {
          throw new DialError(
            "unavailable",
            "the server has no default TCP upstream (--tcp-upstream)",
          );
        }
        try {
          return await connectTcp(
            { transport: "tcp", hostname: up.host, port: up.port },
            this.policy().connectTimeoutMs,
            signal,
          );
        } catch (e) {
          throw new DialError("unreachable", `default upstream: ${(e as Error).message}`);
        }
      }
      return await inner(target, signal);
    };
  }

  /** The UDP upstream for the relay (`UdpRelayOptions.upstream`). */
  readonly udpUpstream = (): Target | undefined => this.policy().udpUpstream;

  /** A kind-3 datagram from the client: the reply of an IN UDP flow. */
  onDatagram(payload: Uint8Array): void {
    const d = parseMapDatagram(payload);
    if (!d) return;
    const m = this.udp.get(d.id);
    const f = m?.byFlow.get(d.flow);
    if (!m || !f) return;
    f.last = performance.now();
    this.account(d.payload.length, 0);
    m.sock.send(d.payload.slice(), f.addr).catch(() => {});
  }

  /** Closes every listener (the session or the control stream ended). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.closeListeners();
  }

  private closeListeners(): void {
    for (const l of this.tcpListeners.values()) {
      try {
        l.close();
      } catch {
        // closed
      }
    }
    this.tcpListeners.clear();
    for (const m of this.udp.values()) {
      try {
        m.sock.close();
      } catch {
        // closed
      }
    }
    this.udp.clear();
    clearInterval(this.sweep);
    this.sweep = undefined;
  }

  private openControl(): Duplex {
    const [outside, inside] = duplexPair();
    void this.serveControl(inside);
    return outside;
  }

  private async serveControl(control: Duplex): Promise<void> {
    const reader = new BufferedReader(control);
    try {
      const line = await reader.readLine(MAP_LINE_MAX);
      if (line === null) return;
      const req = parseMapRequest(utf8.decode(encodeLatin1(line)));
      const p = this.policy();
      const upstream = { tcp: p.tcpUpstream !== undefined, udp: p.udpUpstream !== undefined };
      if (typeof req === "string") {
        await writeAll(control, encodeMapResponse({ upstream, in: [] }));
        this.log(`mapping request refused: ${req}`);
        return;
      }
      // A new request replaces what an earlier control stream of this session opened.
      this.closeListeners();
      const answers: InAnswer[] = [];
      for (const m of req) answers.push(this.openIn(m, p));
      await writeAll(control, encodeMapResponse({ upstream, in: answers }));
      // The listeners live as long as the control stream.
      const buf = new Uint8Array(256);
      while ((await reader.read(buf)) !== null) { /* nothing else is expected */ }
    } catch {
      // reset, session closed
    } finally {
      this.closeListeners();
      closeQuietly(control);
    }
  }

  private openIn(m: InRequest, p: MappingPolicy): InAnswer {
    let at: HostPort;
    try {
      at = parseHostPort(m.listen);
    } catch {
      return this.refuse(m, "not a host:port");
    }
    if (!isInListenHost(at.host)) {
      return this.refuse(m, "the server listens on loopback or an unspecified address only");
    }
    if (!p.allowInPorts.has(at.port)) {
      return this.refuse(m, `port ${at.port} is not in this key's allowInPorts`);
    }
    const host = at.host === "localhost" ? "127.0.0.1" : at.host;
    try {
      if (m.proto === "tcp") {
        const l = Deno.listen({ hostname: host, port: at.port, transport: "tcp" });
        this.tcpListeners.set(m.id, l);
        void this.acceptLoop(m.id, l);
      } else {
        const sock = Deno.listenDatagram({ hostname: host, port: at.port, transport: "udp" });
        const entry: InUdp = {
          id: m.id,
          sock,
          bySource: new Map(),
          byFlow: new Map(),
          nextFlow: 1,
        };
        this.udp.set(m.id, entry);
        void this.udpLoop(entry);
        this.sweep ??= setInterval(() => this.expireFlows(), 5000);
      }
    } catch (e) {
      return this.refuse(m, `cannot listen on ${formatHostPort(at)}: ${(e as Error).message}`);
    }
    this.stats.inOpened++;
    const bound = formatHostPort({ host, port: at.port });
    this.log(`IN ${m.proto} mapping ${m.id} listening on ${bound}`);
    return { id: m.id, ok: true, bound };
  }

  private refuse(m: InRequest, reason: string): InAnswer {
    this.stats.inRefused++;
    this.log(`IN ${m.proto} mapping ${m.id} (${m.listen}) refused: ${reason}`);
    return { id: m.id, ok: false, reason };
  }

  private async acceptLoop(id: number, l: Deno.Listener): Promise<void> {
    try {
      for await (const tcp of l) {
        this.stats.inConnections++;
        void this.carryIn(id, tcp);
      }
    } catch {
      // closed
    }
  }

  private async carryIn(id: number, tcp: Deno.Conn): Promise<void> {
    let stream: Duplex;
    try {
      stream = this.conn.openStream();
    } catch {
      closeQuietly(tcp); // session closing or at its stream limit
      return;
    }
    try {
      const src = tcp.remoteAddr as Deno.NetAddr;
      await writeAll(stream, encodeInStreamHeader(id, { host: src.hostname, port: src.port }));
      await relay(tcp, stream, {
        onBytes: (toClient, fromClient) => this.account(fromClient, toClient),
      });
    } catch {
      // reset or closed: relay closed both
    } finally {
      closeQuietly(tcp);
      closeQuietly(stream);
    }
  }

  private async udpLoop(m: InUdp): Promise<void> {
    try {
      for await (const [data, from] of m.sock) {
        const a = from as Deno.NetAddr;
        const key = `${a.hostname}|${a.port}`;
        let f = m.bySource.get(key);
        const now = performance.now();
        if (!f) {
          if (m.bySource.size >= MAX_UDP_FLOWS) continue;
          f = { flow: m.nextFlow++, addr: a, key, last: now };
          m.bySource.set(key, f);
          m.byFlow.set(f.flow, f);
        }
        f.last = now;
        this.stats.inDatagrams++;
        this.account(0, data.length);
        this.conn.sendDatagram(encodeMapDatagram(m.id, f.flow, data));
      }
    } catch {
      // closed
    }
  }

  private expireFlows(): void {
    const now = performance.now();
    for (const m of this.udp.values()) {
      for (const f of m.byFlow.values()) {
        if (now - f.last > UDP_FLOW_IDLE_MS) {
          m.byFlow.delete(f.flow);
          m.bySource.delete(f.key);
        }
      }
    }
  }
}
