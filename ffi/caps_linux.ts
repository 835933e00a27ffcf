/**
 * Passing CAP_NET_ADMIN on to the commands the host journal runs (`ip`,
 * `nft`, `iptables`, `resolvectl`) when the daemon has it from file
 * capabilities (`setcap cap_net_admin=eip ostp-client`) rather than from
 * root: a file capability stays with the program that has it and is not
 * inherited by what it runs. Raising it into the ambient set (Linux ≥ 4.3)
 * hands it on across exec — that one capability, nothing else.
 * @module
 */

import { errno, libc } from "./libc.ts";

/** The capability number of CAP_NET_ADMIN. */
export const CAP_NET_ADMIN = 12;
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_RAISE = 2;

/** What {@link passNetAdminToChildren} found. */
export type AmbientResult =
  /** Root: children are root too, nothing to do. */
  | "root"
  /** CAP_NET_ADMIN is now ambient: children get it. */
  | "raised"
  /** This process does not have CAP_NET_ADMIN at all. */
  | "missing"
  /** The kernel refused (too old, or a securebit forbids ambient capabilities); errno. */
  | { failed: number };

/**
 * Raises CAP_NET_ADMIN into the inheritable and ambient sets when it is in
 * the permitted set; never throws (not on Linux: "root" is not claimed, "missing").
 */
export function passNetAdminToChildren(): AmbientResult {
  if (Deno.build.os !== "linux") return "missing";
  if (Deno.uid() === 0) return "root";
  const c = libc();
  const header = new Uint8Array(8);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, LINUX_CAPABILITY_VERSION_3, true);
  hv.setInt32(4, 0, true); // this process
  // Two 32-bit words per set: { effective, permitted, inheritable } × 2.
  const data = new Uint8Array(24);
  const dv = new DataView(data.buffer);
  if (c.capget(header, data) !== 0) return { failed: errno() };
  const bit = 1 << CAP_NET_ADMIN; // in the first word (caps 0..31)
  const permitted = dv.getUint32(4, true);
  if ((permitted & bit) === 0) return "missing";
  const inheritable = dv.getUint32(8, true);
  if ((inheritable & bit) === 0) {
    dv.setUint32(8, inheritable | bit, true);
    if (c.capset(header, data) !== 0) return { failed: errno() };
  }
  if (c.prctl(PR_CAP_AMBIENT, BigInt(PR_CAP_AMBIENT_RAISE), BigInt(CAP_NET_ADMIN), 0n, 0n) !== 0) {
    return { failed: errno() };
  }
  return "raised";
}
