/**
 * The carrier settings of both daemons (docs/carriers.md).
 *
 * Server: `"faketcp": { "listen": "0.0.0.0:8443" }`, `"uot": { "listen": … }`,
 * `"tls": { "listen": "0.0.0.0:443", "cert": "…", "key": "…", "fallback":
 * "127.0.0.1:8080" }` — each absent block is a carrier not offered. UDP is
 * always on (`listen`).
 *
 * Client: `"carrier": "udp" | "faketcp" | "uot" | "tls" | "auto"` (default
 * "udp"); `"auto"` tries the carriers of `"fallback"` in order (default
 * udp, faketcp, tls). Per carrier the server's port (`"faketcp": {"port"}`,
 * `"uot": {"port"}`, `"tls": {"port", "serverName", "ca"}`; default: the
 * server's UDP port, TLS 443).
 * @module
 */

import { CARRIER_KINDS, type CarrierKind, isCarrierKind } from "../carrier/carrier.ts";
import type { HostPort, ObjectReader } from "./types.ts";

/** The server's extra carrier listeners. */
export interface ServerCarriersConfig {
  /** fake-TCP listener (raw sockets; root or CAP_NET_RAW + CAP_NET_ADMIN). */
  faketcp?: { listen: HostPort; stateDir?: string };
  /** UDP-over-TCP listener. */
  uot?: { listen: HostPort };
  /** TLS listener with its certificate and the web origin strangers are handed to. */
  tls?: { listen: HostPort; cert: string; key: string; fallback?: HostPort };
  /** UDP with forward error correction, on a port of its own; `mode` is the server's default. */
  fec?: { listen: HostPort; mode: FecSetting };
}

/** Forward error correction as configured: off, adaptive, or a fixed `data:parity` ratio. */
export type FecSetting = "off" | "auto" | { data: number; parity: number };

/** Most data shards per group a config may ask for. */
export const FEC_MAX_DATA = 64;

/** Parses "off", "auto" or "data:parity" (e.g. "10:3"); null when it is none of them. */
export function parseFecSetting(s: string): FecSetting | null {
  const v = s.trim().toLowerCase();
  if (v === "off" || v === "auto") return v;
  const m = /^(\d{1,3}):(\d{1,3})$/.exec(v);
  if (!m) return null;
  const data = Number(m[1]);
  const parity = Number(m[2]);
  if (data < 1 || data > FEC_MAX_DATA || parity > data) return null;
  return { data, parity };
}

/** The text form of a setting ("off", "auto", "10:3"). */
export function formatFecSetting(f: FecSetting): string {
  return typeof f === "string" ? f : `${f.data}:${f.parity}`;
}

/** The FEC wrapper's mode (`shared/carrier/fec.ts`) for a configured setting. */
export function fecModeOf(
  f: FecSetting,
): { kind: "off" } | { kind: "auto" } | { kind: "fixed"; k: number; m: number } {
  if (f === "off") return { kind: "off" };
  if (f === "auto") return { kind: "auto" };
  return { kind: "fixed", k: f.data, m: f.parity };
}

const FEC_SYNTAX =
  `expected "off", "auto" or "data:parity" (data 1..${FEC_MAX_DATA}, parity ≤ data)`;

/** The server config fields this module reads. */
export const SERVER_CARRIER_FIELDS = ["faketcp", "uot", "tls", "fec"] as const;

/** Reads the server's carrier blocks. */
export function readServerCarriers(r: ObjectReader): ServerCarriersConfig {
  const out: ServerCarriersConfig = {};
  for (const kind of ["faketcp", "uot"] as const) {
    if (!r.has(kind) || r.get(kind) === null) continue;
    const o = r.object(kind, kind === "faketcp" ? ["listen", "stateDir"] : ["listen"]);
    const listen = o.hostPort("listen", undefined, true);
    const dir = kind === "faketcp" ? o.string("stateDir") : undefined;
    if (!listen) o.add(o.at("listen"), 'required: "host:port", e.g. "0.0.0.0:8443"');
    else out[kind] = { listen, ...(dir !== undefined ? { stateDir: dir } : {}) };
  }
  if (r.has("fec") && r.get("fec") !== null) {
    const o = r.object("fec", ["listen", "mode"]);
    const listen = o.hostPort("listen", undefined, true);
    if (!listen) o.add(o.at("listen"), 'required: "host:port", e.g. "0.0.0.0:8444"');
    const text = o.string("mode");
    const mode = text === undefined ? "auto" : parseFecSetting(text);
    if (mode === null) o.add(o.at("mode"), FEC_SYNTAX);
    if (listen && mode !== null) out.fec = { listen, mode };
  }
  if (r.has("tls") && r.get("tls") !== null) {
    const o = r.object("tls", ["listen", "cert", "key", "fallback"]);
    const listen = o.hostPort("listen", { host: "0.0.0.0", port: 443 }, true)!;
    const cert = o.string("cert");
    const key = o.string("key");
    if (cert === undefined) o.add(o.at("cert"), "required: the certificate chain's PEM file");
    if (key === undefined) o.add(o.at("key"), "required: the private key's PEM file");
    const fallback = o.hostPort("fallback", undefined, false);
    if (cert !== undefined && key !== undefined) {
      out.tls = { listen, cert, key, ...(fallback ? { fallback } : {}) };
    }
  }
  return out;
}

/** What the client's carrier setting says. */
export type CarrierChoice = CarrierKind | "auto";

/** The client's carrier settings. */
export interface ClientCarriersConfig {
  /** The carrier, or "auto" for the fallback order. */
  carrier: CarrierChoice;
  /** The order "auto" tries. */
  fallback: CarrierKind[];
  /** The server's fake-TCP port (default: its UDP port). */
  faketcpPort?: number;
  /** The server's UDP-over-TCP port (default: its UDP port). */
  uotPort?: number;
  /** The server's TLS port, the name its certificate carries, extra CA file. */
  tls: { port: number; serverName?: string; ca?: string };
  /** Forward error correction on the UDP carrier (to the server's FEC port). */
  fec: FecSetting;
  /** The server's FEC port (required when `fec` is on). */
  fecPort?: number;
  /** Where fake-TCP's host-change journal lives (default /var/lib/ostp). */
  stateDir?: string;
}

/** The client config fields this module reads. */
export const CLIENT_CARRIER_FIELDS = [
  "carrier",
  "fallback",
  "faketcp",
  "uot",
  "tls",
  "fec",
  "fecPort",
] as const;

/** The default "auto" order. */
export const DEFAULT_FALLBACK: readonly CarrierKind[] = ["udp", "faketcp", "tls"];

/** Parses a carrier name as a person wrote it; null when it is none. */
export function parseCarrierChoice(s: string): CarrierChoice | null {
  const v = s.trim().toLowerCase();
  return v === "auto" || isCarrierKind(v) ? v : null;
}

/**
 * Reads the client's carrier fields. With a `turn` relay configured
 * (`hasTurn`) the carrier defaults to "turn", and "auto" tries it right
 * after plain UDP unless `fallback` says otherwise.
 */
export function readClientCarriers(r: ObjectReader, hasTurn = false): ClientCarriersConfig {
  const out: ClientCarriersConfig = {
    carrier: hasTurn ? "turn" : "udp",
    fallback: hasTurn ? ["udp", "turn", ...DEFAULT_FALLBACK.slice(1)] : [...DEFAULT_FALLBACK],
    tls: { port: 443 },
    fec: "off",
  };
  const c = r.string("carrier");
  if (c !== undefined) {
    const choice = parseCarrierChoice(c);
    if (choice) out.carrier = choice;
    else r.add(r.at("carrier"), `expected one of ${[...CARRIER_KINDS, "auto"].join(", ")}`);
  }
  const f = r.get("fallback");
  if (f !== undefined) {
    if (!Array.isArray(f) || f.length === 0 || f.some((x) => typeof x !== "string")) {
      r.add(r.at("fallback"), `expected a non-empty array of ${CARRIER_KINDS.join(", ")}`);
    } else {
      const kinds: CarrierKind[] = [];
      f.forEach((x: string, i) => {
        const k = x.trim().toLowerCase();
        if (!isCarrierKind(k)) r.add(`${r.at("fallback")}[${i}]`, `unknown carrier "${x}"`);
        else if (kinds.includes(k)) r.add(`${r.at("fallback")}[${i}]`, `"${k}" listed twice`);
        else kinds.push(k);
      });
      out.fallback = kinds;
    }
  }
  for (const kind of ["faketcp", "uot"] as const) {
    if (!r.has(kind) || r.get(kind) === null) continue;
    const o = r.object(kind, kind === "faketcp" ? ["port", "stateDir"] : ["port"]);
    if (o.has("port")) {
      out[kind === "faketcp" ? "faketcpPort" : "uotPort"] = o.integer("port", 0, 1, 65535);
    }
    const dir = kind === "faketcp" ? o.string("stateDir") : undefined;
    if (dir !== undefined) out.stateDir = dir;
  }
  if (r.has("tls") && r.get("tls") !== null) {
    const o = r.object("tls", ["port", "serverName", "ca"]);
    out.tls.port = o.integer("port", 443, 1, 65535);
    const name = o.string("serverName");
    if (name !== undefined) out.tls.serverName = name;
    const ca = o.string("ca");
    if (ca !== undefined) out.tls.ca = ca;
  }
  const fec = r.string("fec");
  if (fec !== undefined) {
    const f = parseFecSetting(fec);
    if (f === null) r.add(r.at("fec"), FEC_SYNTAX);
    else out.fec = f;
  }
  if (r.has("fecPort")) out.fecPort = r.integer("fecPort", 0, 1, 65535);
  if (
    !hasTurn && (out.carrier === "turn" || (out.carrier === "auto" && f !== undefined &&
      out.fallback.includes("turn")))
  ) {
    r.add(
      r.at("carrier"),
      'the "turn" carrier needs a turn block (turn.server, username, password)',
    );
  }
  if (out.fec !== "off" && out.fecPort === undefined) {
    r.add(
      r.at("fec"),
      "needs the server's FEC port: fecPort, or a share link with fecport=<port>",
    );
  }
  return out;
}

/** The carriers a client setting uses, in order. */
export function carrierOrder(c: ClientCarriersConfig): CarrierKind[] {
  return c.carrier === "auto" ? [...c.fallback] : [c.carrier];
}
