/**
 * `nat-check`: what kind of NAT is this machine behind (RFC 5780 §4.3–4.4,
 * RFC 4787's terms), with one STUN server that has a second address
 * (OTHER-ADDRESS, CHANGE-REQUEST — coturn with two listening IPs) or two
 * plain STUN servers.
 *
 * - Mapping: the public address seen by the primary address, by the
 *   other IP, and by the other IP and port, all from one socket: the same
 *   everywhere is endpoint-independent; a change with the IP only is
 *   address-dependent; a change with the port too is address- and
 *   port-dependent ("symmetric"). With two plain servers: the same from both
 *   or not.
 * - Filtering (needs CHANGE-REQUEST), from a fresh socket that has sent only
 *   to the primary address: an answer from the other IP and port means
 *   endpoint-independent filtering; from the other port alone,
 *   address-dependent; neither, address- and port-dependent.
 * @module
 */

import { type DatagramSocket, openUdp } from "../../shared/net/datagram.ts";
import { BindingClient, type BindingResult } from "../../shared/stun/binding.ts";
import { formatNetAddr } from "../../shared/net/ip.ts";
import type { RetransmitConfig } from "../../shared/stun/transactions.ts";

/** RFC 4787 behaviour classes. */
export type NatBehaviour =
  | "endpoint-independent"
  | "address-dependent"
  | "address-and-port-dependent"
  | "unknown";

/** What the check found. */
export interface NatReport {
  /** The server(s) asked. */
  servers: string[];
  /** The primary server answered at all. */
  reachable: boolean;
  /** The server's alternate address (RFC 5780), if it has one. */
  otherAddress?: string;
  /** The local socket of the mapping test. */
  local: string;
  /** The public address (the primary server's view). */
  mapped?: string;
  /** The public address equals a local one: no NAT. */
  noNat: boolean;
  /** Mapping behaviour. */
  mapping: NatBehaviour;
  /** Filtering behaviour. */
  filtering: NatBehaviour;
  /** The classic name (full cone, restricted cone, port-restricted cone, symmetric). */
  type: string;
  /** How each test went, for the curious. */
  steps: string[];
}

/** Options of {@link natCheck}. */
export interface NatCheckOptions {
  /** One server (RFC 5780 capable for the full check) or two plain ones. */
  servers: Deno.NetAddr[];
  /** Opens the test sockets (default {@link openUdp}). */
  openSocket?: (hostname: string, port: number) => DatagramSocket;
  /** Retransmissions per test (default: 300 ms RTO, 4 sends, ~3 s per test). */
  retransmit?: RetransmitConfig;
  /** The machine's own addresses (default `Deno.networkInterfaces()`). */
  localAddresses?: () => string[];
}

const CHECK_RETRANSMIT: RetransmitConfig = { rtoMs: 300, maxSends: 4, lastWaitRtos: 3 };

function same(a: Deno.NetAddr | undefined, b: Deno.NetAddr | undefined): boolean {
  return !!a && !!b && a.hostname === b.hostname && a.port === b.port;
}

/** One socket with a Binding client on it: ask, and wait for the answer or the timeout. */
class Prober {
  private readonly binding: BindingClient;
  private readonly waiting = new Map<string, (r: BindingResult | null) => void>();
  private readonly socket: DatagramSocket;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private tags = 0;
  private readonly runP: Promise<void>;

  constructor(open: (h: string, p: number) => DatagramSocket, v6: boolean, rt: RetransmitConfig) {
    this.binding = new BindingClient(rt);
    this.socket = open(v6 ? "::" : "0.0.0.0", 0);
    this.runP = this.socket.run((data, from) => {
      const r = this.binding.receive(data, from, performance.now());
      if (!r) return;
      const done = r.tag !== undefined ? this.waiting.get(r.tag) : undefined;
      if (r.tag !== undefined) this.waiting.delete(r.tag);
      done?.("error" in r ? null : r);
    });
  }

  get port(): number {
    return this.socket.addr.port;
  }

  ask(
    to: Deno.NetAddr,
    change: { ip?: boolean; port?: boolean } = {},
  ): Promise<BindingResult | null> {
    const tag = String(++this.tags);
    const bytes = this.binding.request(to, performance.now(), {
      tag,
      ...(change.ip ? { changeIp: true } : {}),
      ...(change.port ? { changePort: true } : {}),
    });
    this.socket.send(bytes, to);
    this.socket.flush();
    const p = new Promise<BindingResult | null>((resolve) => this.waiting.set(tag, resolve));
    this.schedule();
    return p;
  }

  private schedule(): void {
    clearTimeout(this.timer);
    const at = this.binding.nextDeadline();
    if (at === Infinity) return;
    this.timer = setTimeout(() => {
      const { resend, expired } = this.binding.poll(performance.now());
      for (const r of resend) this.socket.send(r.bytes, r.to);
      this.socket.flush();
      for (const e of expired) {
        const done = e.tag !== undefined ? this.waiting.get(e.tag) : undefined;
        if (e.tag !== undefined) this.waiting.delete(e.tag);
        done?.(null);
      }
      this.schedule();
    }, Math.max(0, at - performance.now()));
  }

  async close(): Promise<void> {
    clearTimeout(this.timer);
    this.socket.close();
    await this.runP.catch(() => {});
  }
}

function defaultLocalAddresses(): string[] {
  try {
    return Deno.networkInterfaces().map((i) => i.address);
  } catch {
    return [];
  }
}

/** Runs the check; never throws for what the network does (an unreachable server is a finding). */
export async function natCheck(opts: NatCheckOptions): Promise<NatReport> {
  if (opts.servers.length === 0) throw new Error("nat-check needs a STUN server");
  const open = opts.openSocket ?? openUdp;
  const rt = opts.retransmit ?? CHECK_RETRANSMIT;
  const primary = opts.servers[0];
  const second = opts.servers[1];
  const v6 = primary.hostname.includes(":");
  const steps: string[] = [];
  const report: NatReport = {
    servers: opts.servers.map(formatNetAddr),
    reachable: false,
    local: "",
    noNat: false,
    mapping: "unknown",
    filtering: "unknown",
    type: "unknown",
    steps,
  };
  const a = new Prober(open, v6, rt);
  report.local = `udp port ${a.port}`;
  try {
    const r1 = await a.ask(primary);
    if (!r1) {
      steps.push(
        `I: no answer from ${formatNetAddr(primary)}: UDP to it is blocked, or it is down`,
      );
      report.type = "UDP blocked (or the STUN server is down)";
      return report;
    }
    report.reachable = true;
    report.mapped = formatNetAddr(r1.mapped);
    steps.push(
      `I: ${formatNetAddr(primary)} sees ${formatNetAddr(r1.mapped)} (${Math.round(r1.rttMs)} ms)`,
    );
    const other = r1.other;
    if (other) report.otherAddress = formatNetAddr(other);
    const locals = (opts.localAddresses ?? defaultLocalAddresses)();
    if (locals.includes(r1.mapped.hostname) && r1.mapped.port === a.port) {
      report.noNat = true;
      report.mapping = "endpoint-independent";
      steps.push("the public address is this machine's own: no NAT on the way");
    } else if (other && other.hostname !== primary.hostname) {
      const altIp: Deno.NetAddr = { ...primary, hostname: other.hostname };
      const r2 = await a.ask(altIp);
      steps.push(
        r2
          ? `II: ${formatNetAddr(altIp)} sees ${formatNetAddr(r2.mapped)}`
          : `II: no answer from ${formatNetAddr(altIp)}`,
      );
      if (r2 && same(r2.mapped, r1.mapped)) report.mapping = "endpoint-independent";
      else if (r2) {
        const r3 = await a.ask(other);
        steps.push(
          r3
            ? `III: ${formatNetAddr(other)} sees ${formatNetAddr(r3.mapped)}`
            : `III: no answer from ${formatNetAddr(other)}`,
        );
        if (r3) {
          report.mapping = same(r3.mapped, r2.mapped)
            ? "address-dependent"
            : "address-and-port-dependent";
        }
      }
    } else if (second) {
      const r2 = await a.ask(second);
      steps.push(
        r2
          ? `II: ${formatNetAddr(second)} sees ${formatNetAddr(r2.mapped)}`
          : `II: no answer from ${formatNetAddr(second)}`,
      );
      if (r2) {
        // Two servers tell only whether the mapping follows the destination, not by what.
        report.mapping = same(r2.mapped, r1.mapped)
          ? "endpoint-independent"
          : second.hostname === primary.hostname
          ? "address-and-port-dependent"
          : "address-dependent";
      }
    } else {
      steps.push("mapping: the server gives no OTHER-ADDRESS; name a second server to test it");
    }
  } finally {
    await a.close();
  }
  if (report.otherAddress && !report.noNat) {
    // A fresh socket that has sent to the primary address only.
    const b = new Prober(open, v6, rt);
    try {
      const base = await b.ask(primary);
      if (base) {
        const both = await b.ask(primary, { ip: true, port: true });
        steps.push(`filtering II (answer from the other IP and port): ${both ? "came" : "none"}`);
        if (both) report.filtering = "endpoint-independent";
        else {
          const port = await b.ask(primary, { port: true });
          steps.push(`filtering III (answer from the other port): ${port ? "came" : "none"}`);
          report.filtering = port ? "address-dependent" : "address-and-port-dependent";
        }
      }
    } finally {
      await b.close();
    }
  } else if (report.noNat) {
    report.filtering = "endpoint-independent";
  } else {
    steps.push("filtering: needs a server with RFC 5780 (CHANGE-REQUEST), e.g. coturn on two IPs");
  }
  report.type = classify(report);
  return report;
}

function classify(r: NatReport): string {
  if (r.noNat) return "no NAT (open internet, or a firewall that NATs nothing)";
  if (r.mapping === "unknown") return "unknown";
  if (r.mapping !== "endpoint-independent") return "symmetric";
  switch (r.filtering) {
    case "endpoint-independent":
      return "full cone";
    case "address-dependent":
      return "restricted cone";
    case "address-and-port-dependent":
      return "port-restricted cone";
    default:
      return "cone (filtering unknown)";
  }
}

const WORDS: Record<NatBehaviour, string> = {
  "endpoint-independent": "endpoint-independent",
  "address-dependent": "address-dependent",
  "address-and-port-dependent": "address- and port-dependent",
  unknown: "unknown",
};

/** The report as a person reads it. */
export function formatNatReport(r: NatReport): string {
  const lines = [`NAT check with ${r.servers.join(" and ")}`];
  const row = (k: string, v: string) => lines.push(`  ${k.padEnd(16)} ${v}`);
  if (r.otherAddress) row("other address", `${r.otherAddress} (RFC 5780)`);
  row("local socket", r.local);
  if (r.mapped) row("public address", r.mapped);
  row("mapping", WORDS[r.mapping]);
  row("filtering", WORDS[r.filtering]);
  row("NAT type", r.type);
  let advice: string;
  if (!r.reachable) {
    advice = "UDP looks blocked: use --carrier auto (fake-TCP, TLS) or a TURN relay (--turn)";
  } else if (r.type === "symmetric") {
    advice = "works: ostp needs no hole punching; a new public port per destination is fine, " +
      "and a rebinding is followed by the server (roaming)";
  } else {
    advice = "works: the session keeps one UDP flow through this NAT";
  }
  row("for ostp", advice);
  lines.push("steps:");
  for (const s of r.steps) lines.push(`  ${s}`);
  return lines.join("\n");
}
