/**
 * Port mappings (docs/mappings.md), the syntax rstun's users know:
 * `MODE^[ip:]port^[ip:]port`, comma-separated, per transport.
 *
 * - `OUT^<local listen>^<target | ANY>`: the client listens; each
 *   connection (TCP) or source address (UDP) goes through the tunnel to the
 *   target, resolved and connected from the server. `ANY` is the server's
 *   default upstream (`--tcp-upstream` / `--udp-upstream`).
 * - `IN^<local target>^<server listen>`: the server listens (loopback or
 *   unspecified only); each connection or source is carried to the client,
 *   which connects to its local target.
 *
 * A bare port is `127.0.0.1:port`. Config: `"mappings": {"tcp": [...],
 * "udp": [...]}`; flags `--tcp-mappings`, `--udp-mappings`.
 * @module
 */

import { type HostPort, HostPortError, isUnspecifiedHost, parseHostPort } from "./types.ts";

/** Direction of a mapping. */
export type MappingMode = "OUT" | "IN";
/** Transport of a mapping. */
export type MappingProto = "tcp" | "udp";

/** One mapping. */
export interface Mapping {
  /** Its number among the client's mappings (1, 2, …): IN mappings are named by it on the wire. */
  id: number;
  /** TCP or UDP. */
  proto: MappingProto;
  /** OUT or IN. */
  mode: MappingMode;
  /** OUT: where the client listens; IN: the client's local target. */
  local: HostPort;
  /** OUT: the target on the server's side, or "ANY"; IN: where the server listens. */
  remote: HostPort | "ANY";
  /** As written, for logs ("OUT^8080^db.internal:5432"). */
  spec: string;
}

/** Thrown for a mapping that cannot be read; the message says what is wrong. */
export class MappingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MappingError";
  }
}

function endpoint(s: string, what: string): HostPort {
  const t = s.trim();
  if (/^\d+$/.test(t)) {
    const port = Number(t);
    if (port < 1 || port > 65535) throw new MappingError(`${what}: port must be from 1 to 65535`);
    return { host: "127.0.0.1", port };
  }
  try {
    const hp = parseHostPort(t);
    if (hp.port === 0) throw new MappingError(`${what}: port must be from 1 to 65535`);
    return hp;
  } catch (e) {
    if (e instanceof HostPortError) throw new MappingError(`${what}: ${e.message}`);
    throw e;
  }
}

/** True for an address a server may open a listener on for a client: loopback or unspecified. */
export function isInListenHost(host: string): boolean {
  return isUnspecifiedHost(host) || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host) ||
    host === "localhost";
}

/** Parses one `MODE^a^b` for `proto`. */
export function parseMapping(spec: string, proto: MappingProto, id: number): Mapping {
  const parts = spec.trim().split("^");
  if (parts.length !== 3) {
    throw new MappingError(`"${spec.trim()}": expected MODE^[ip:]port^[ip:]port`);
  }
  const mode = parts[0].trim().toUpperCase();
  if (mode !== "OUT" && mode !== "IN") {
    throw new MappingError(`"${spec.trim()}": the mode must be OUT or IN`);
  }
  if (mode === "OUT") {
    const local = endpoint(parts[1], "the local listen address");
    const r = parts[2].trim();
    const remote = r.toUpperCase() === "ANY" ? "ANY" : endpoint(r, "the target");
    return { id, proto, mode, local, remote, spec: spec.trim() };
  }
  const local = endpoint(parts[1], "the local target");
  const remote = endpoint(parts[2], "the server's listen address");
  if (!isInListenHost(remote.host)) {
    throw new MappingError(
      `"${spec.trim()}": the server listens on loopback or an unspecified address only ` +
        "(127.0.0.1, ::1, 0.0.0.0, ::) or a bare port",
    );
  }
  return { id, proto, mode: "IN", local, remote, spec: spec.trim() };
}

/** Parses a comma-separated list; ids continue from `firstId`. */
export function parseMappingList(text: string, proto: MappingProto, firstId = 1): Mapping[] {
  return text.split(",").filter((s) => s.trim().length > 0).map((s, i) =>
    parseMapping(s, proto, firstId + i)
  );
}

/** `host:port` of an endpoint, IPv6 in brackets. */
export function formatEndpoint(hp: HostPort | "ANY"): string {
  if (hp === "ANY") return "ANY";
  return hp.host.includes(":") ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}
