/**
 * TUN mode, composed: the host journal (a crashed run's leftovers undone
 * first), the TUN device with its addresses, the DNS relay and the TUN
 * inbound on the client's router, then — journaled — the policy routing of
 * `tun.autoRoute` and the resolver pointed at the TUN. {@link TunMode.stop}
 * undoes the host changes in reverse order before the device goes; after a
 * crash, the next start or `ostp-client down` ({@link undoLeftovers}) does.
 * @module
 */

import {
  describe,
  type HostChange,
  HostJournal,
  type UndoReport,
} from "../../shared/host/journal.ts";
import type { TunConfig } from "../../shared/config/tun_config.ts";
import type { Target } from "../../shared/duplex.ts";
import { getLog } from "../../shared/log.ts";
import { ipBytes } from "../../shared/net/cidr.ts";
import { LinuxTun } from "../../ffi/tun_linux.ts";
import { passNetAdminToChildren } from "../../ffi/caps_linux.ts";
import { TunInbound } from "../inbound/tun.ts";
import { DnsRelay } from "../dns/dns_relay.ts";
import { NameMap } from "../dns/name_map.ts";
import type { FlowContext, Outbound } from "../outbound/outbound.ts";
import { autoRouteChanges } from "./auto_route.ts";
import { parseDefaultRoute, parseDefaultRoute6, windowsTunChanges } from "./windows_plan.ts";
import type { TunDevice } from "../../shared/tun/device.ts";
import { dnsChanges, resolverKind } from "./dns_config.ts";

const log = getLog("client.tun");

/** The journal file of a TUN named `name` under `stateDir`. */
export function journalPath(stateDir: string, name: string): string {
  return `${stateDir.replace(/\/+$/, "")}/journal/tun-${name}.jsonl`;
}

/** What TUN mode needs beside its config. */
export interface TunModeDeps {
  /** Where flows go: the client's router. */
  router: Outbound;
  /** The server's addresses (IP literals), kept out of the TUN. */
  servers: string[];
  /** CIDRs the routing excludes (`exclude.cidrs`): routed by the kernel, outside the TUN. */
  excludeCidrs: string[];
  /** Whether a flow with no known name is sniffed for one (domain rules exist). */
  sniffWhen?: (ctx: FlowContext) => boolean;
  /** The tunnel's UDP room per address family (see `TunInboundOptions.udpMaxPayload`). */
  udpMaxPayload?: (family: 4 | 6) => number | null;
  /**
   * Host changes made before the routes (the VPN mode's kill switch, so nothing leaks while
   * the routes go in): journaled with the rest, undone after them.
   */
  firstChanges?: readonly HostChange[];
}

/** The journaled host changes of `cfg`, in order (auto-route, then DNS). */
export function tunHostChanges(
  cfg: TunConfig,
  deps: Pick<TunModeDeps, "servers" | "excludeCidrs" | "firstChanges">,
): HostChange[] {
  const out: HostChange[] = [...(deps.firstChanges ?? [])];
  if (cfg.autoRoute) {
    out.push(...autoRouteChanges({
      tun: cfg.name,
      table: cfg.table,
      mark: cfg.mark,
      priority: cfg.priority,
      ipv6: cfg.addresses.some((a) => a.address.includes(":")),
      exclude: deps.excludeCidrs,
      servers: deps.servers,
    }));
  }
  if (cfg.dns.configure && cfg.dns.addresses.length > 0) {
    out.push(...dnsChanges(cfg.name, cfg.dns.addresses[0], resolverKind()));
  }
  return out;
}

/** What `--dry-run` prints for TUN mode: the device, then every host change. */
export function tunDryRun(
  cfg: TunConfig,
  deps: Pick<TunModeDeps, "servers" | "excludeCidrs" | "firstChanges">,
): string[] {
  return [
    `tun device ${cfg.name}: mtu ${cfg.mtu}, ${
      cfg.addresses.map((a) => `${a.address}/${a.prefix}`).join(", ")
    } (netlink)`,
    ...tunHostChanges(cfg, deps).map(describe),
  ];
}

/** The output of `route print <args>` on Windows, or "" when it cannot run. */
async function routePrint(args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command("route", {
      args: ["print", ...args],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(out.stdout);
  } catch {
    return "";
  }
}

/** Reads the physical default routes on Windows (IPv4 and IPv6). */
async function windowsGateways(): Promise<WindowsGateways> {
  return {
    v4: parseDefaultRoute(await routePrint(["-4", "0.0.0.0"])),
    v6: parseDefaultRoute6(await routePrint(["-6", "::/0"])),
  };
}

/** The physical default routes TUN mode on Windows routes the server and exclusions through. */
export interface WindowsGateways {
  v4: ReturnType<typeof parseDefaultRoute>;
  v6: ReturnType<typeof parseDefaultRoute6>;
}

/** The journaled host changes of `cfg` on Windows (docs/windows.md). */
export function windowsTunHostChanges(
  cfg: TunConfig,
  deps: Pick<TunModeDeps, "servers" | "excludeCidrs" | "firstChanges">,
  gateways: WindowsGateways,
): HostChange[] {
  const v4 = cfg.addresses.find((a) => !a.address.includes(":"));
  const v6 = cfg.addresses.find((a) => a.address.includes(":"));
  if (!v4) throw new Error("tun on Windows needs an IPv4 address (tun.addresses)");
  return [
    ...(deps.firstChanges ?? []),
    ...windowsTunChanges({
      adapter: cfg.name,
      address: `${v4.address}/${v4.prefix}`,
      ...(v6 ? { address6: `${v6.address}/${v6.prefix}` } : {}),
      mtu: cfg.mtu,
      dns: cfg.dns.configure ? cfg.dns.addresses : [],
      servers: cfg.autoRoute ? deps.servers : [],
      exclude: cfg.autoRoute ? deps.excludeCidrs : [],
      gateway: gateways.v4,
      gateway6: gateways.v6,
    }).filter((c) => cfg.autoRoute || !/route|block DNS/.test(c.what)),
  ];
}

/** A running TUN mode. */
export class TunMode {
  private constructor(
    /** The device. */
    readonly device: TunDevice,
    /** The inbound (statistics). */
    readonly inbound: TunInbound,
    private readonly relay: DnsRelay,
    private readonly journal: HostJournal,
    private readonly running: Promise<void>,
  ) {}

  /**
   * Brings TUN mode up. Needs root or CAP_NET_ADMIN (the device, the routes)
   * and, for auto-route and DNS, the `ip` and `resolvectl` commands.
   * @throws with a message naming what failed; whatever was changed is undone first.
   */
  static async start(cfg: TunConfig, deps: TunModeDeps): Promise<TunMode> {
    const windows = Deno.build.os === "windows";
    if (Deno.build.os !== "linux" && !windows) {
      throw new Error(`tun: not available on ${Deno.build.os} (Linux and Windows)`);
    }
    // With `setcap cap_net_admin=eip` instead of root, the ip/nft/resolvectl the journal runs
    // need the capability handed on (docs/vpn.md).
    const caps = windows ? true : passNetAdminToChildren();
    if (typeof caps === "object") {
      log.warn("cannot hand CAP_NET_ADMIN to the commands run for routes and DNS (errno {e})", {
        e: caps.failed,
      });
    }
    const { journal, recovered } = await HostJournal.open(journalPath(cfg.stateDir, cfg.name), {
      owner: `ostp-client tun ${cfg.name}`,
    });
    if (recovered) reportRecovered(recovered);
    let device: TunDevice | null = null;
    let inbound: TunInbound | null = null;
    let relay: DnsRelay | null = null;
    try {
      if (windows) {
        await import("../../ffi/process_windows.ts"); // the journal's liveness check
        const { openWintun } = await import("../../ffi/tun_windows.ts");
        device = openWintun({ name: cfg.name, mtu: cfg.mtu });
      } else {
        device = LinuxTun.open({
          name: cfg.name,
          mtu: cfg.mtu,
          addresses: cfg.addresses,
          offload: cfg.offload,
        });
      }
      const names = new NameMap();
      relay = new DnsRelay({
        upstream: cfg.dns.upstream as Target,
        outbound: deps.router,
        names,
      });
      const dnsAddresses = cfg.dns.addresses.map(ipBytes).filter((a): a is Uint8Array => !!a);
      inbound = new TunInbound({
        device,
        outbound: deps.router,
        names,
        dns: relay,
        dnsAddresses,
        hijackDns: cfg.dns.hijack,
        sniffWhen: deps.sniffWhen,
        udpMaxPayload: deps.udpMaxPayload,
      });
      const running = inbound.run();
      // The routes go in once the inbound answers, so no captured packet waits for nobody.
      const changes = windows
        ? windowsTunHostChanges(cfg, deps, await windowsGateways())
        : tunHostChanges(cfg, deps);
      for (const c of changes) await journal.apply(c);
      log.info("tun {name} up: {addresses}, mtu {mtu}{route}", {
        name: cfg.name,
        addresses: cfg.addresses.map((a) => `${a.address}/${a.prefix}`).join(", "),
        mtu: cfg.mtu,
        route: cfg.autoRoute ? ", all traffic routed into it" : "",
      });
      return new TunMode(device, inbound, relay, journal, running);
    } catch (e) {
      const report = await journal.undoAll();
      for (const f of report.failed) log.warn("undo {what}: {error}", f);
      inbound?.close();
      relay?.close();
      device?.close();
      throw e;
    }
  }

  /** Undoes the host changes (reverse order), then stops the inbound and closes the device. */
  async stop(): Promise<void> {
    const report = await this.journal.undoAll();
    for (const f of report.failed) log.warn("undo {what}: {error}", f);
    this.inbound.close();
    this.relay.close();
    this.device.close();
    await this.running;
  }
}

function reportRecovered(r: UndoReport): void {
  log.warn("undid {n} host change(s) a previous run left behind", { n: r.undone.length });
  for (const f of r.failed) log.warn("could not undo {what}: {error}", f);
}

/**
 * `ostp-client down`: undoes what crashed TUN runs left under `stateDir`
 * (every journal there whose owner is gone). Returns one report per journal.
 */
export async function undoLeftovers(
  stateDir: string,
): Promise<{ path: string; report: UndoReport }[]> {
  const dir = `${stateDir.replace(/\/+$/, "")}/journal`;
  const out: { path: string; report: UndoReport }[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return out;
    throw e;
  }
  for (const e of entries) {
    if (!e.isFile || !e.name.endsWith(".jsonl")) continue;
    const path = `${dir}/${e.name}`;
    const report = await HostJournal.recover(path);
    if (report) out.push({ path, report });
  }
  return out;
}

/**
 * `down` for a person: undoes what crashed runs left under `stateDir`
 * ({@link undoLeftovers}), printing each journal's count and every undo that
 * failed; "nothing to undo" unless `quiet`. Resolves to the exit code (1 when
 * something could not be undone).
 */
export async function downAndReport(stateDir: string, who: string, quiet = false): Promise<number> {
  let failed = 0;
  try {
    const done = await undoLeftovers(stateDir);
    if (done.length === 0 && !quiet) console.log("nothing to undo");
    for (const { path, report } of done) {
      console.log(`${path}: undid ${report.undone.length} change(s)`);
      for (const f of report.failed) {
        failed++;
        console.error(`  could not undo ${f.what}: ${f.error}`);
      }
    }
  } catch (e) {
    console.error(`${who}: ${(e as Error).message}`);
    return 1;
  }
  return failed > 0 ? 1 : 0;
}
