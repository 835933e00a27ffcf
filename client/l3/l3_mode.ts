/**
 * Layer-3 mode of the client, composed (docs/l3.md): the host journal (a
 * crashed run's leftovers undone first), the {@link L3Client} on the tunnel's
 * sessions, and — once the server has assigned the addresses — the TUN with
 * them and the grant's MTU, the grant's routes into it, and with
 * `defaultRoute` the policy routing of TUN mode (everything but the client's
 * own marked sockets and the server into the tunnel). All host changes are
 * journaled and undone by {@link L3Mode.stop}, the next start, or `down`.
 * @module
 */

import { type HostChange, HostJournal } from "../../shared/host/journal.ts";
import type { ClientL3Config } from "../../shared/config/client_l3_config.ts";
import type { L3Grant } from "../../shared/l3/control.ts";
import { getLog } from "../../shared/log.ts";
import { LinuxTun } from "../../ffi/tun_linux.ts";
import { passNetAdminToChildren } from "../../ffi/caps_linux.ts";
import { autoRouteChanges } from "../tun/auto_route.ts";
import { formatPrefix, maskPrefix, parseIp, parsePrefix } from "../../shared/net/cidr.ts";
import { journalPath } from "../tun/tun_mode.ts";
import { L3Client, type L3Path } from "./l3_client.ts";

const log = getLog("client.l3");

/** "10.77.0.2/24" → address and prefix. */
function split(cidr: string): { address: string; prefix: number } {
  const i = cidr.lastIndexOf("/");
  return { address: cidr.slice(0, i), prefix: Number(cidr.slice(i + 1)) };
}

/** The network of an address/prefix ("10.77.0.2/24" → "10.77.0.0/24"), as formatPrefix writes it. */
function network(cidr: string): string | null {
  const { address, prefix } = split(cidr);
  const ip = parseIp(address);
  if (!ip) return null;
  return formatPrefix(maskPrefix(ip, address.includes(":") ? prefix : prefix + 96));
}

/** A prefix as formatPrefix writes it (so equal prefixes compare equal). */
function canonical(cidr: string): string {
  const p = parsePrefix(cidr);
  return p.ok ? formatPrefix(p.prefix) : cidr;
}

/** The host changes of a grant: routes beyond the connected subnet, then the default route. */
export function l3HostChanges(
  cfg: ClientL3Config,
  grant: L3Grant,
  servers: readonly string[],
): HostChange[] {
  const out: HostChange[] = [];
  // The kernel routes the own subnets itself (the addresses carry their prefix).
  const connected = new Set([
    network(grant.address),
    grant.address6 ? network(grant.address6) : null,
  ]);
  for (const r of grant.routes) {
    if (connected.has(canonical(r))) continue;
    const f = r.includes(":") ? "-6" : "-4";
    out.push({
      kind: "command",
      what: `${r} into ${cfg.name}`,
      apply: ["ip", f, "route", "add", r, "dev", cfg.name],
      undo: ["ip", f, "route", "del", r, "dev", cfg.name],
      undoMayFail: true, // gone with the device after a crash
    });
  }
  if (cfg.defaultRoute) {
    out.push(...autoRouteChanges({
      tun: cfg.name,
      table: cfg.table,
      mark: cfg.mark,
      priority: cfg.priority,
      ipv6: grant.address6 !== undefined,
      exclude: [],
      servers,
    }));
  }
  return out;
}

/** What the mode needs of the client. */
export interface L3ModeDeps {
  /** Opens the control stream on a session (`OstpPool.openL3`). */
  open(): Promise<L3Path>;
  /** The server's addresses (IP literals), kept out of a default route. */
  servers: string[];
}

/** A running layer-3 mode. */
export class L3Mode {
  private constructor(
    private readonly client: L3Client,
    private readonly journal: HostJournal,
    private readonly running: Promise<void>,
  ) {}

  /** The client (its device and grant, once up; counters). */
  get l3(): L3Client {
    return this.client;
  }

  /**
   * Starts asking for layer 3; the TUN comes up with the first grant.
   * Needs root or CAP_NET_ADMIN.
   */
  static async start(cfg: ClientL3Config, deps: L3ModeDeps): Promise<L3Mode> {
    if (Deno.build.os !== "linux") throw new Error(`l3: not available on ${Deno.build.os} yet`);
    passNetAdminToChildren();
    const { journal, recovered } = await HostJournal.open(journalPath(cfg.stateDir, cfg.name), {
      owner: `ostp-client l3 ${cfg.name}`,
    });
    if (recovered) {
      log.warn("undid {n} host change(s) a previous run left", { n: recovered.undone.length });
    }
    const instance = [...crypto.getRandomValues(new Uint8Array(16))]
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    const client = new L3Client({
      instance,
      ipv6: cfg.ipv6,
      open: deps.open,
      log: (level, message) => (level === "warn" ? log.warn(message) : log.info(message)),
      up: async (grant) => {
        const addresses = [split(grant.address)];
        if (grant.address6) addresses.push(split(grant.address6));
        const device = LinuxTun.open({ name: cfg.name, mtu: grant.mtu, addresses });
        try {
          for (const c of l3HostChanges(cfg, grant, deps.servers)) await journal.apply(c);
        } catch (e) {
          await journal.undoAll();
          device.close();
          throw e;
        }
        return device;
      },
      changed: (grant) => {
        log.warn("the TUN keeps its addresses; restart the client to take {address}", {
          address: grant.address,
        });
        return Promise.resolve();
      },
    });
    const running = client.run().catch((e) =>
      log.error("layer 3 stopped: {error}", { error: String(e) })
    );
    return new L3Mode(client, journal, running);
  }

  /** Undoes the host changes, stops asking, closes the device. */
  async stop(): Promise<void> {
    this.client.stop();
    const report = await this.journal.undoAll();
    for (const f of report.failed) log.warn("undo {what}: {error}", f);
    this.client.device?.close();
    await this.running;
  }
}
