/**
 * What a server runs for each session, on the main thread (one worker) or in
 * a worker thread alike: the TCP relay for the streams it opens and the UDP
 * relay for its datagrams, both behind the egress policy, with the traffic
 * told to `account`.
 * @module
 */

import { formatHostPort } from "../shared/config/types.ts";
import type { Dialer } from "../shared/duplex.ts";
import { getLog } from "../shared/log.ts";
import { isExpectedDisconnect } from "../shared/pipe.ts";
import type { Connection } from "../shared/session/connection.ts";
import type { EgressPolicy, Resolver } from "./egress.ts";
import { type RelayStats, serveStream } from "./relay.ts";
import { UdpRelay, type UdpRelayStats } from "./udp_relay.ts";
import { DatagramDemux, DatagramKind } from "../shared/session/datagram_demux.ts";
import type { L3HubMode } from "./l3/l3_hub_mode.ts";
import type { L3SessionPort } from "./l3/l3_service.ts";
import type { Dispatcher } from "./dispatcher.ts";
import { type MappingPolicy, SessionMappings } from "./mappings.ts";

const log = getLog("server");

/** What {@link serveSession} needs. */
export interface SessionServices {
  /** Outbound TCP (the egress dialer). */
  readonly dialer: Dialer;
  /** TCP relay counters to add to. */
  readonly relayStats: RelayStats;
  /** UDP relay counters to add to. */
  readonly udpStats: UdpRelayStats;
  /** The live UDP relays (each session's is added, and removed when it closes). */
  readonly udpRelays: Set<UdpRelay>;
  /** Name resolution for UDP targets (default: the system resolver, cached). */
  readonly lookup?: Resolver;
  /** The egress policy in force. */
  readonly policy: () => EgressPolicy;
  /** What port mappings of a key may do (docs/mappings.md); absent: OUT to named targets only. */
  readonly mappings?: (keyHex: string) => MappingPolicy;
}

/**
 * Serves the streams and datagrams of `conn`: `account(up, down)` hears the
 * payload bytes relayed, `onStream()` each stream opened.
 */
export function serveSession(
  conn: Connection,
  services: SessionServices,
  account: (up: number, down: number) => void,
  onStream: () => void,
  l3?: { hub: L3HubMode; port: L3SessionPort },
  session?: { keyHex: string; log: (message: string) => void },
): void {
  // The layer-3 and mapping control streams and the default upstream are handled here as
  // dialed upstreams; the rest goes out.
  let dialer = l3 ? l3.hub.dialerFor(l3.port, services.dialer) : services.dialer;
  const policyOf = services.mappings;
  const mappings = policyOf && session
    ? new SessionMappings(conn, () => policyOf(session.keyHex), account, session.log)
    : null;
  if (mappings) dialer = mappings.dialerFor(dialer);
  conn.onStream = (stream) => {
    onStream();
    serveStream(stream, dialer, services.relayStats, (e) => {
      if (!isExpectedDisconnect(e)) log.debug("stream error: {error}", { error: String(e) });
    }, account);
  };
  const udp = new UdpRelay(conn, {
    stats: services.udpStats,
    account,
    lookup: services.lookup,
    policy: services.policy,
    ...(mappings ? { upstream: mappings.udpUpstream } : {}),
    onDenied: (host, port, reason, rule) =>
      log.debug("egress refused udp {target} ({rule}): {reason}", {
        target: formatHostPort({ host, port }),
        rule,
        reason,
      }),
  });
  services.udpRelays.add(udp);
  const demux = new DatagramDemux();
  demux.on(DatagramKind.udp, (d) => udp.handle(d));
  if (l3) demux.on(DatagramKind.l3, (d) => l3.hub.onDatagram(l3.port.id, d));
  if (mappings) demux.on(DatagramKind.map, (d) => mappings.onDatagram(d));
  conn.onDatagram = demux.handle;
  conn.closed.then(() => {
    mappings?.close();
    udp.close();
    services.udpRelays.delete(udp);
    l3?.hub.sessionClosed(l3.port.id);
  });
}

/**
 * Ends one thread's data plane (the main thread with one worker, or a
 * worker): every session closed with `code` and `reason`, the UDP relays,
 * then — once the CLOSE datagrams had a moment to leave — the carriers' listeners, and
 * waits for their receive loops.
 */
export async function closeDataPlane(
  plane: {
    dispatcher: Dispatcher | null | undefined;
    udpRelays: Set<UdpRelay>;
    listeners: readonly { close(): void }[];
    loops: readonly Promise<void>[];
  },
  code: number,
  reason: string,
): Promise<void> {
  plane.dispatcher?.closeAll(code, reason);
  for (const u of plane.udpRelays) u.close();
  plane.udpRelays.clear();
  await new Promise((r) => setTimeout(r, 20));
  for (const s of plane.listeners) {
    try {
      s.close();
    } catch {
      // already closed
    }
  }
  await Promise.allSettled(plane.loops);
}
