/**
 * The egress policy (server/egress.ts, docs/egress.md) composed into the
 * server's outbound TCP path: {@link createEgressDialer} wraps a {@link Dialer}
 * so that every target is resolved here, every address checked, and only the
 * checked address literal is dialed. {@link ownAddresses} gathers the
 * server's own addresses for the policy.
 * @module
 */

import type { ServerConfig } from "../shared/config/types.ts";
import { type Dialer, DialError, type Duplex, type Target } from "../shared/duplex.ts";
import { formatIp, isMapped, parseIpInto } from "../shared/net/cidr.ts";
import { type EgressPolicy, localAddresses, resolveAllowed, type Resolver } from "./egress.ts";

/** Options of {@link createEgressDialer}. */
export interface EgressDialerOptions {
  /** The policy in force, asked at every dial (a reload swaps it for new connections). */
  policy: () => EgressPolicy;
  /** Every address a name has (default: the system resolver, `resolveAllowed`'s default). */
  lookup?: Resolver;
  /**
   * Told every refusal: the target asked for, the full reason for the log (for
   * a name, with the address it resolved to, which the client is not told),
   * the deciding entry.
   */
  onDenied?: (target: Target, detail: string, rule: string) => void;
}

/** Failures after which the next address of a name is tried: the host answered or has no route. */
const NEXT_ADDRESS: ReadonlySet<string> = new Set(["refused", "unreachable"]);

/**
 * Wraps `dial` with the egress policy: the target is resolved ({@link resolveAllowed}:
 * literals without DNS, names on every address they have), refused with
 * `DialError("denied", "not allowed: …")` when any address is forbidden, and
 * otherwise dialed at the checked literal — never at the name, which a second
 * lookup could answer differently. A name's addresses are tried in the
 * resolver's order while the failure is `refused` or `unreachable`.
 */
export function createEgressDialer(dial: Dialer, opts: EgressDialerOptions): Dialer {
  const addr = new Uint8Array(16);
  return async (target: Target, signal?: AbortSignal): Promise<Duplex> => {
    const policy = opts.policy();
    // An address literal (most targets) is decided here, without a lookup or a wait.
    if (parseIpInto(target.host, addr) !== 0) {
      const d = policy.check(addr, target.port);
      if (!d.allowed) {
        opts.onDenied?.(target, d.detail, d.rule);
        throw new DialError("denied", d.reason);
      }
      const host = formatIp(addr);
      return await dial(host === target.host ? target : { host, port: target.port }, signal);
    }
    const r = await resolveAllowed(target.host, target.port, policy, opts.lookup);
    if (!r.allowed) {
      if (r.failure === "denied") opts.onDenied?.(target, r.detail ?? r.reason, r.rule ?? "");
      throw new DialError(r.failure, r.reason);
    }
    const addresses = r.addresses;
    for (let i = 0;; i++) {
      try {
        return await dial({ host: addresses[i], port: target.port }, signal);
      } catch (e) {
        const last = i + 1 >= addresses.length || signal?.aborted === true;
        if (last || !(e instanceof DialError) || !NEXT_ADDRESS.has(e.reason)) throw e;
      }
    }
  };
}

/** Loopback (`127.0.0.0/8`, `::1`) or unspecified (`0.0.0.0/8`, `::`), as 16 bytes. */
function loopbackOrUnspecified(a: Uint8Array): boolean {
  if (isMapped(a)) return a[12] === 127 || a[12] === 0;
  for (let i = 0; i < 15; i++) if (a[i] !== 0) return false;
  return a[15] <= 1;
}

/**
 * The server's own addresses for `EgressPolicyOptions.self`: every interface
 * address, the literal listen addresses and a literal `publicAddress` (a
 * server behind NAT does not see that one on its interfaces). Loopback and
 * unspecified addresses are left out: the built-in list refuses them already,
 * and as host entries they would make `"allow": ["127.0.0.0/8"]` open
 * everything on loopback but 127.0.0.1.
 * @param interfaces the interface addresses (default: {@link localAddresses}; needs `--allow-sys`).
 */
export function ownAddresses(
  config: Pick<ServerConfig, "listen" | "publicAddress">,
  interfaces: readonly string[] = localAddresses(),
): string[] {
  const out: string[] = [];
  const probe = new Uint8Array(16);
  const candidates = [
    ...interfaces,
    ...config.listen.map((hp) => hp.host),
    ...(config.publicAddress ? [config.publicAddress.host] : []),
  ];
  for (const c of candidates) {
    const text = c.split("%")[0];
    if (parseIpInto(text, probe) === 0 || loopbackOrUnspecified(probe)) continue;
    if (!out.includes(text)) out.push(text);
  }
  return out;
}
