/**
 * The client's `tun` block (system-wide capture, docs/tun.md): every field
 * has a default, so `"tun": {}` or the `--tun` flag alone turns it on.
 * @module
 */

import type { HostPort, ObjectReader } from "./types.ts";
import { parseIpInto } from "../net/cidr.ts";

/** An address on the TUN with its prefix length. */
export interface TunAddress {
  address: string;
  prefix: number;
}

/** The TUN's DNS: where captured queries go and what is captured. */
export interface TunDnsConfig {
  /** Addresses the TUN answers DNS on (inside the TUN's subnets, not its own addresses). */
  addresses: string[];
  /** The resolver queries are sent to, through the router (so through the tunnel). */
  upstream: HostPort;
  /** Answer queries to any address on port 53 too (apps with their own resolver). */
  hijack: boolean;
  /** Point the system resolver at the TUN (resolvectl or /etc/resolv.conf, journaled). */
  configure: boolean;
}

/** The validated `tun` block. */
export interface TunConfig {
  /** Interface name (1..15 bytes). */
  name: string;
  /** The TUN's own addresses: one IPv4, optionally one IPv6. */
  addresses: TunAddress[];
  /** MTU of the TUN (TCP ends in the client, so large is fast; UDP over the tunnel's gets PTB). */
  mtu: number;
  /** Route all traffic into the TUN (policy routing, journaled and undone). */
  autoRoute: boolean;
  /** DNS. */
  dns: TunDnsConfig;
  /** Routing table of our own. */
  table: number;
  /** Firewall mark of the client's own sockets. */
  mark: number;
  /** Priority of the first policy rule (two are used). */
  priority: number;
  /** Where the host-change journal lives (persistent: it must outlive a crash and a reboot). */
  stateDir: string;
  /** IFF_VNET_HDR with TSO/checksum offloads (docs/tun.md); off by default. */
  offload: boolean;
}

/** Defaults of every `tun` field. */
export const TUN_DEFAULTS: Readonly<TunConfig> = Object.freeze({
  name: "ostp0",
  addresses: [{ address: "172.19.0.1", prefix: 30 }, { address: "fdfe:dcba:9876::1", prefix: 126 }],
  mtu: 9000,
  autoRoute: true,
  dns: {
    addresses: ["172.19.0.2"],
    upstream: { host: "1.1.1.1", port: 53 },
    hijack: true,
    configure: true,
  },
  table: 7331,
  mark: 0x7331,
  priority: 9000,
  stateDir: defaultStateDir(),
  offload: false,
});

/** The fields of a `tun` block. */
export const TUN_FIELDS = [
  "name",
  "addresses",
  "mtu",
  "autoRoute",
  "dns",
  "table",
  "mark",
  "priority",
  "stateDir",
  "offload",
] as const;

const DNS_FIELDS = ["addresses", "upstream", "hijack", "configure"] as const;

function bool(r: ObjectReader, field: string, def: boolean): boolean {
  const v = r.get(field);
  if (v === undefined) return def;
  if (typeof v !== "boolean") {
    r.add(r.at(field), "expected true or false");
    return def;
  }
  return v;
}

function family(text: string): 0 | 4 | 6 {
  return parseIpInto(text, new Uint8Array(16));
}

function readAddresses(r: ObjectReader): TunAddress[] {
  const v = r.get("addresses");
  if (v === undefined) return TUN_DEFAULTS.addresses.map((a) => ({ ...a }));
  if (!Array.isArray(v) || v.length === 0 || v.length > 2) {
    r.add(r.at("addresses"), 'expected one or two "address/prefix" strings (IPv4, IPv6)');
    return [];
  }
  const out: TunAddress[] = [];
  const seen = new Set<number>();
  v.forEach((item, i) => {
    const path = `${r.at("addresses")}[${i}]`;
    const m = typeof item === "string" ? item.match(/^(.+)\/(\d{1,3})$/) : null;
    const fam = m ? family(m[1]) : 0;
    const prefix = m ? Number(m[2]) : -1;
    if (!m || fam === 0) {
      r.add(path, 'expected "address/prefix", e.g. "172.19.0.1/30" or "fdfe:dcba:9876::1/126"');
      return;
    }
    const max = fam === 4 ? 30 : 126;
    if (prefix < 1 || prefix > max) {
      r.add(path, `prefix must be 1..${max} (the subnet needs room for the DNS address)`);
      return;
    }
    if (seen.has(fam)) {
      r.add(path, `only one IPv${fam} address`);
      return;
    }
    seen.add(fam);
    out.push({ address: m[1], prefix });
  });
  if (!seen.has(4) && out.length > 0) r.add(r.at("addresses"), "an IPv4 address is required");
  return out;
}

function readDns(r: ObjectReader): TunDnsConfig {
  const d = TUN_DEFAULTS.dns;
  const o = r.object("dns", DNS_FIELDS);
  let addresses = [...d.addresses];
  const v = o.get("addresses");
  if (v !== undefined) {
    if (!Array.isArray(v) || v.length === 0 || v.length > 2) {
      o.add(o.at("addresses"), "expected one or two IP addresses");
    } else {
      addresses = [];
      v.forEach((a, i) => {
        if (typeof a !== "string" || family(a) === 0) {
          o.add(`${o.at("addresses")}[${i}]`, "expected an IPv4 or IPv6 address");
        } else addresses.push(a);
      });
    }
  }
  const upstream = o.hostPort("upstream", { ...d.upstream }, false)!;
  return {
    addresses,
    upstream,
    hijack: bool(o, "hijack", d.hijack),
    configure: bool(o, "configure", d.configure),
  };
}

/** Reads the `tun` block of `r` (absent → undefined: no TUN). */
export function readTunConfig(r: ObjectReader): TunConfig | undefined {
  if (!r.has("tun")) return undefined;
  const raw = r.get("tun");
  if (raw === true) return structuredClone(TUN_DEFAULTS) as TunConfig;
  if (raw === false) return undefined;
  const t = r.object("tun", TUN_FIELDS);
  const d = TUN_DEFAULTS;
  const name = t.string("name") ?? d.name;
  const nameBytes = new TextEncoder().encode(name).length;
  if (nameBytes < 1 || nameBytes > 15 || !/^[A-Za-z0-9_.-]+$/.test(name)) {
    t.add(t.at("name"), "must be 1..15 characters of letters, digits, '_', '-', '.'");
  }
  const mark = t.integer("mark", d.mark, 1, 0xffffffff);
  return {
    name,
    addresses: readAddresses(t),
    mtu: t.integer("mtu", d.mtu, 1280, 65535),
    autoRoute: bool(t, "autoRoute", d.autoRoute),
    dns: readDns(t),
    table: t.integer("table", d.table, 1, 0xfffffffe),
    mark,
    priority: t.integer("priority", d.priority, 1, 32765),
    stateDir: t.string("stateDir") ?? d.stateDir,
    offload: bool(t, "offload", d.offload),
  };
}

/**
 * Where host-change journals live by default: `/var/lib/ostp`, or on Windows
 * `%ProgramData%\ostp` (machine-wide, as the routes are).
 */
export function defaultStateDir(): string {
  if (Deno.build.os !== "windows") return "/var/lib/ostp";
  let base = "C:/ProgramData";
  try {
    base = (Deno.env.get("ProgramData") ?? base).replace(/\\/g, "/");
  } catch {
    // no env permission: the usual place
  }
  return `${base}/ostp`;
}
