/**
 * The client's `l3` block (docs/l3.md): a layer-3 TUN with the address the
 * server assigns. `"l3": true` takes every default.
 * @module
 */

import type { ObjectReader } from "./types.ts";

/** The client's layer-3 settings. */
export interface ClientL3Config {
  /** TUN interface name (1..15 bytes). */
  name: string;
  /** Route everything into the tunnel too (`--l3-default-route`), with loop protection. */
  defaultRoute: boolean;
  /** Ask for an IPv6 address too (when the server has an IPv6 subnet). */
  ipv6: boolean;
  /** Where the host-change journal lives. */
  stateDir: string;
  /** Routing table, firewall mark and rule priority of the default route (as in TUN mode). */
  table: number;
  mark: number;
  priority: number;
}

/** Defaults of every `l3` field. */
export const CLIENT_L3_DEFAULTS: Readonly<ClientL3Config> = Object.freeze({
  name: "ostp-l3",
  defaultRoute: false,
  ipv6: true,
  stateDir: "/var/lib/ostp",
  table: 7332,
  mark: 0x7331,
  priority: 9010,
});

const FIELDS = ["name", "defaultRoute", "ipv6", "stateDir", "table", "mark", "priority"] as const;

/** Reads the `l3` block of `r` (absent or false → undefined). */
export function readClientL3Config(r: ObjectReader): ClientL3Config | undefined {
  if (!r.has("l3")) return undefined;
  const raw = r.get("l3");
  if (raw === true) return { ...CLIENT_L3_DEFAULTS };
  if (raw === false) return undefined;
  const o = r.object("l3", FIELDS);
  const d = CLIENT_L3_DEFAULTS;
  const name = o.string("name") ?? d.name;
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) {
    o.add(o.at("name"), "must be 1..15 characters of letters, digits, '_', '-', '.'");
  }
  const flag = (field: "defaultRoute" | "ipv6", def: boolean) => {
    const v = o.get(field);
    if (v === undefined) return def;
    if (typeof v !== "boolean") {
      o.add(o.at(field), "expected true or false");
      return def;
    }
    return v;
  };
  return {
    name,
    defaultRoute: flag("defaultRoute", d.defaultRoute),
    ipv6: flag("ipv6", d.ipv6),
    stateDir: o.string("stateDir") ?? d.stateDir,
    table: o.integer("table", d.table, 1, 0xfffffffe),
    mark: o.integer("mark", d.mark, 1, 0xffffffff),
    priority: o.integer("priority", d.priority, 1, 32765),
  };
}
