/**
 * The server's layer-3 hub, composed (docs/l3.md): the host journal (a
 * crashed run's leftovers undone first), the hub's TUN with the server's
 * addresses, NAT when `l3.nat` is on, and the {@link L3Service} between the
 * TUN and the sessions. The server gives each session a dialer that hands the
 * layer-3 control stream to the hub ({@link L3HubMode.dialerFor}) and its
 * kind-2 datagrams to {@link L3HubMode.onDatagram}.
 * @module
 */

import { HostJournal } from "../../shared/host/journal.ts";
import type { Dialer, Target } from "../../shared/duplex.ts";
import type { ServerL3Config } from "../../shared/config/server_l3_config.ts";
import { AddressPool } from "../../shared/l3/address_pool.ts";
import { L3Hub } from "../../shared/l3/hub.ts";
import { L3_CONTROL_TARGET } from "../../shared/l3/control.ts";
import { PACKET_OVERHEAD } from "../../shared/wire/packet.ts";
import { getLog } from "../../shared/log.ts";
import { LinuxTun } from "../../ffi/tun_linux.ts";
import { passNetAdminToChildren } from "../../ffi/caps_linux.ts";
import { L3Service, type L3SessionPort } from "./l3_service.ts";
import { l3NatChanges } from "./nat.ts";

const log = getLog("server.l3");

/**
 * The largest IP packet a session of `datagramSize` carries as a kind-2
 * datagram: the packet overhead, the DATAGRAM frame's type, length and
 * padding reserve (the session's `maxDatagramPayload`), and the kind byte.
 */
export function l3MtuFor(datagramSize: number): number {
  return datagramSize - PACKET_OVERHEAD - 68 - 1;
}

/** Whether a stream asks for the layer-3 control exchange. */
export function isL3Target(t: Target): boolean {
  return t.port === L3_CONTROL_TARGET.port && t.host.toLowerCase() === L3_CONTROL_TARGET.host;
}

/** The hub's journal file. */
function journalPath(stateDir: string, name: string): string {
  return `${stateDir.replace(/\/+$/, "")}/journal/l3-${name}.jsonl`;
}

async function readSysctl(path: string): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch {
    return "0";
  }
}

/** A running hub. */
export class L3HubMode {
  private constructor(
    /** The service (counters, members). */
    readonly service: L3Service,
    /** The hub's forwarding table (drop counters). */
    readonly hub: L3Hub,
    private readonly device: LinuxTun,
    private readonly journal: HostJournal,
    private readonly running: Promise<void>,
  ) {}

  /**
   * Brings the hub up: needs root or CAP_NET_ADMIN (and nft for NAT).
   * `datagramSize` is the server's `mtu`; `fixed` the users' fixed addresses.
   */
  static async start(
    cfg: ServerL3Config,
    datagramSize: number,
    fixed: readonly string[],
  ): Promise<L3HubMode> {
    if (Deno.build.os !== "linux") throw new Error(`l3: not available on ${Deno.build.os} yet`);
    passNetAdminToChildren();
    const pool = new AddressPool({ ...cfg, reserved: fixed });
    const mtu = cfg.mtu ?? l3MtuFor(datagramSize);
    const { journal, recovered } = await HostJournal.open(journalPath(cfg.stateDir, cfg.name), {
      owner: `ostp-server l3 ${cfg.name}`,
    });
    if (recovered) {
      log.warn("undid {n} host change(s) a previous run left", { n: recovered.undone.length });
    }
    const addresses = [{ address: pool.server.v4, prefix: pool.server.prefix }];
    if (pool.server.v6) addresses.push({ address: pool.server.v6, prefix: pool.server.prefix6! });
    const device = LinuxTun.open({ name: cfg.name, mtu, addresses });
    try {
      if (cfg.nat) {
        const forwarding = {
          v4: await readSysctl("/proc/sys/net/ipv4/ip_forward"),
          v6: await readSysctl("/proc/sys/net/ipv6/conf/all/forwarding"),
        };
        for (
          const c of l3NatChanges({
            tun: cfg.name,
            subnet: cfg.subnet,
            subnet6: cfg.subnet6,
            forwarding,
          })
        ) await journal.apply(c);
      }
    } catch (e) {
      await journal.undoAll();
      device.close();
      throw e;
    }
    const size = 2 ** (32 - pool.server.prefix);
    const base = pool.server.v4.split(".").map(Number);
    const n = ((base[0] << 24) >>> 0) + (base[1] << 16) + (base[2] << 8) + base[3];
    const bcast = (n - (n % size) + size - 1) >>> 0;
    const hub = new L3Hub({
      broadcast: `${bcast >>> 24}.${(bcast >>> 16) & 255}.${(bcast >>> 8) & 255}.${bcast & 255}`,
    });
    const routes = [cfg.subnet, ...(cfg.subnet6 ? [cfg.subnet6] : [])];
    const service = new L3Service({ device, pool, hub, mtu, routes });
    const running = service.run();
    log.info("layer-3 hub {name} up: {address}{v6}, mtu {mtu}{nat}", {
      name: cfg.name,
      address: `${pool.server.v4}/${pool.server.prefix}`,
      v6: pool.server.v6 ? `, ${pool.server.v6}/${pool.server.prefix6}` : "",
      mtu,
      nat: cfg.nat ? ", NAT on" : "",
    });
    return new L3HubMode(service, hub, device, journal, running);
  }

  /** The dialer of one session: the control target goes to the hub, the rest to `inner`. */
  dialerFor(port: L3SessionPort, inner: Dialer): Dialer {
    return (target, signal) =>
      isL3Target(target) ? Promise.resolve(this.service.openControl(port)) : inner(target, signal);
  }

  /** A kind-2 datagram of session `id`. */
  onDatagram(id: number, payload: Uint8Array): void {
    this.service.onDatagram(id, payload);
  }

  /** Session `id` ended. */
  sessionClosed(id: number): void {
    this.service.sessionClosed(id);
  }

  /** Ends every lease, undoes the host changes, closes the TUN. */
  async stop(): Promise<void> {
    this.service.close();
    const report = await this.journal.undoAll();
    for (const f of report.failed) log.warn("undo {what}: {error}", f);
    this.device.close();
    await this.running;
  }
}
