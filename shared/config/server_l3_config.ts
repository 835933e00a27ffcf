/**
 * The server's `l3` block (docs/l3.md): `"l3": { "subnet": "10.77.0.0/24" }`
 * is all it takes — the server takes the first address, the rest is the pool.
 * @module
 */

import type { ObjectReader } from "./types.ts";
import { AddressPool, AddressPoolError } from "../l3/address_pool.ts";

/** The server's layer-3 settings. */
export interface ServerL3Config {
  /** IPv4 subnet of the hub. */
  subnet: string;
  /** IPv6 subnet (each client gets the address with its IPv4 host number). */
  subnet6?: string;
  /** The server's own address (default: the subnet's first host address). */
  server?: string;
  /** The pool's first and last address (default: the whole subnet but the server). */
  range?: { first: string; last: string };
  /** The hub's TUN interface. */
  name: string;
  /** Masquerade clients' traffic to anything outside the subnets (journaled, undone). */
  nat: boolean;
  /** Largest IP packet carried; default: what the session's datagrams hold. */
  mtu?: number;
  /** Where the host-change journal lives. */
  stateDir: string;
}

const FIELDS = ["subnet", "subnet6", "server", "range", "name", "nat", "mtu", "stateDir"] as const;

/**
 * Reads the `l3` block (absent → undefined). `fixed` are the users' fixed
 * addresses, checked against the subnet here.
 */
export function readServerL3Config(
  r: ObjectReader,
  fixed: readonly string[] = [],
): ServerL3Config | undefined {
  if (!r.has("l3")) return undefined;
  const o = r.object("l3", FIELDS);
  const subnet = o.string("subnet");
  if (subnet === undefined) {
    o.add(o.at("subnet"), 'required, e.g. "10.77.0.0/24"');
    return undefined;
  }
  const cfg: ServerL3Config = {
    subnet,
    name: o.string("name") ?? "ostp-hub",
    nat: false,
    stateDir: o.string("stateDir") ?? "/var/lib/ostp",
  };
  const subnet6 = o.string("subnet6");
  if (subnet6 !== undefined) cfg.subnet6 = subnet6;
  const server = o.string("server");
  if (server !== undefined) cfg.server = server;
  const range = o.string("range");
  if (range !== undefined) {
    const m = range.match(/^([0-9.]+)-([0-9.]+)$/);
    if (!m) o.add(o.at("range"), 'expected "first-last", e.g. "10.77.0.10-10.77.0.200"');
    else cfg.range = { first: m[1], last: m[2] };
  }
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(cfg.name)) {
    o.add(o.at("name"), "must be 1..15 characters of letters, digits, '_', '-', '.'");
  }
  const nat = o.get("nat");
  if (nat !== undefined) {
    if (typeof nat !== "boolean") o.add(o.at("nat"), "expected true or false");
    else cfg.nat = nat;
  }
  if (o.has("mtu")) cfg.mtu = o.integer("mtu", 1280, 576, 65535);
  try {
    new AddressPool({ ...cfg, reserved: fixed });
  } catch (e) {
    if (!(e instanceof AddressPoolError)) throw e;
    o.add(o.at("subnet"), e.message);
  }
  return cfg;
}
