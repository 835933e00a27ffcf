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
): void {
  conn.onStream = (stream) => {
    onStream();
    serveStream(stream, services.dialer, services.relayStats, (e) => {
      if (!isExpectedDisconnect(e)) log.debug("stream error: {error}", { error: String(e) });
    }, account);
  };
  const udp = new UdpRelay(conn, {
    stats: services.udpStats,
    account,
    lookup: services.lookup,
    policy: services.policy,
    onDenied: (host, port, reason, rule) =>
      log.debug("egress refused udp {target} ({rule}): {reason}", {
        target: formatHostPort({ host, port }),
        rule,
        reason,
      }),
  });
  services.udpRelays.add(udp);
  conn.onDatagram = (d) => udp.handle(d);
  conn.closed.then(() => {
    udp.close();
    services.udpRelays.delete(udp);
  });
}
