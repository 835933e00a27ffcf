/**
 * Interface configuration over rtnetlink (FFI, Linux): link up and MTU
 * (RTM_NEWLINK), IPv4 and IPv6 addresses (RTM_NEWADDR), each request
 * acknowledged by the kernel before the next. Needs only `--allow-ffi` — no
 * `ip` binary, no `--allow-run` — and fails with {@link TunError} "permission"
 * ("needs root or CAP_NET_ADMIN") when the kernel says EPERM. Also
 * {@link inNetns}: run synchronous code with the JS thread inside a named
 * network namespace (for tests, and a TUN that lives in one).
 * @module
 */

import { parseIPv4, parseIPv6 } from "../shared/net/ip.ts";
import { TunError } from "../shared/tun/device.ts";
import { cString, EACCES, EPERM, errno, libc, O_CLOEXEC, O_RDONLY, OsError } from "./libc.ts";

const AF_NETLINK = 16;
const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_ROUTE = 0;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const RTM_NEWLINK = 16;
const RTM_NEWADDR = 20;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 1;
const NLM_F_ACK = 4;
const NLM_F_REPLACE = 0x100;
const NLM_F_CREATE = 0x400;
const IFLA_MTU = 4;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_F_NODAD = 0x02;
const IFF_UP = 1;
const CLONE_NEWNET = 0x40000000;

const RTM_NEWROUTE = 24;
const RTM_GETROUTE = 26;
const RTA_DST = 1;
const RTN_LOCAL = 2;
const EMPTY = new Uint8Array(0);

/** An address to put on an interface: `10.0.0.1/24`, `fd00::1/64`. */
export interface InterfaceAddress {
  /** IPv4 or IPv6 address (no brackets). */
  address: string;
  /** Prefix length (0‥32 or 0‥128); the kernel adds the prefix route. */
  prefix: number;
}

/** What {@link configureInterface} sets. */
export interface InterfaceConfig {
  /** MTU to set (unset: leave as is). */
  mtu?: number;
  /** Addresses to add (replacing the same address if already there). */
  addresses?: readonly InterfaceAddress[];
  /** Bring the link up (default true). */
  up?: boolean;
}

/** The kernel's index of interface `name`; throws if there is none. */
export function interfaceIndex(name: string): number {
  const i = libc().if_nametoindex(cString(name));
  if (i === 0) throw new TunError("os", `no interface named ${name}`, errno());
  return i;
}

/** Parses `a` as an address of either family; throws a TypeError naming it. */
function parseAddress(a: string): { family: number; bytes: Uint8Array } {
  const v4 = parseIPv4(a);
  if (v4) return { family: AF_INET, bytes: v4 };
  const v6 = parseIPv6(a);
  if (v6) return { family: AF_INET6, bytes: v6 };
  throw new TypeError(`not an IP address: ${a}`);
}

/** A route-netlink socket: one request at a time, each waiting for its ack. */
class RtNetlink {
  private readonly fd: number;
  private seq = 1;
  private readonly buf = new Uint8Array(8192);
  private readonly view = new DataView(this.buf.buffer);

  constructor() {
    const c = libc();
    const fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) throw new OsError("socket(AF_NETLINK)", errno());
    this.fd = fd;
    const tv = new Uint8Array(16);
    new DataView(tv.buffer).setBigInt64(0, 2n, true); // 2 s: the kernel answers at once
    c.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16);
  }

  /**
   * Sends message `type` with `flags` and payload `body` and waits for the
   * ack; throws on a negative one. With `reply`, returns the first message of
   * that type the kernel answers with (its payload, copied) instead.
   */
  request(what: string, type: number, flags: number, body: Uint8Array, reply = -1): Uint8Array {
    const c = libc();
    const len = 16 + body.length;
    const msg = new Uint8Array(len);
    const v = new DataView(msg.buffer);
    const seq = this.seq++;
    v.setUint32(0, len, true);
    v.setUint16(4, type, true);
    v.setUint16(6, flags | NLM_F_REQUEST | (reply < 0 ? NLM_F_ACK : 0), true);
    v.setUint32(8, seq, true);
    v.setUint32(12, 0, true);
    msg.set(body, 16);
    const kernel = new Uint8Array(12);
    new DataView(kernel.buffer).setUint16(0, AF_NETLINK, true);
    if (Number(c.sendto(this.fd, msg, BigInt(len), 0, kernel, 12)) !== len) {
      throw new OsError(`netlink ${what}`, errno());
    }
    for (;;) {
      const n = Number(c.recv(this.fd, this.buf, BigInt(this.buf.length), 0));
      if (n < 0) throw new OsError(`netlink ${what} (waiting for the ack)`, errno());
      let off = 0;
      while (off + 16 <= n) {
        const mlen = this.view.getUint32(off, true);
        const mtype = this.view.getUint16(off + 4, true);
        const mseq = this.view.getUint32(off + 8, true);
        if (mlen < 16) break;
        if (mtype === reply && mseq === seq) return this.buf.slice(off + 16, off + mlen);
        if (mtype === NLMSG_ERROR && mseq === seq) {
          const err = -this.view.getInt32(off + 16, true);
          if (err === 0) return EMPTY;
          if (err === EPERM || err === EACCES) {
            throw new TunError("permission", `${what}: needs root or CAP_NET_ADMIN`, err);
          }
          throw new TunError("os", `${what}: ${new OsError("netlink", err).message}`, err);
        }
        off += (mlen + 3) & ~3;
      }
    }
  }

  close(): void {
    libc().close(this.fd);
  }
}

/** Appends an rtattr (type, value) to `parts`. */
function attr(type: number, value: Uint8Array): Uint8Array {
  const len = 4 + value.length;
  const out = new Uint8Array((len + 3) & ~3);
  const v = new DataView(out.buffer);
  v.setUint16(0, len, true);
  v.setUint16(2, type, true);
  out.set(value, 4);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Sets MTU, addresses and link state of interface `name` (in the calling
 * thread's network namespace), in that order: MTU, up, addresses. IPv6
 * addresses skip duplicate-address detection (a TUN has no neighbours), so
 * they are usable when this returns.
 * @throws {TunError} "permission" without CAP_NET_ADMIN, "os" otherwise
 *   (the message names the step); TypeError for an unparsable address.
 */
export function configureInterface(name: string, cfg: InterfaceConfig): void {
  const index = interfaceIndex(name);
  const parsed = (cfg.addresses ?? []).map((a) => {
    const p = parseAddress(a.address);
    const max = p.family === AF_INET ? 32 : 128;
    if (!Number.isInteger(a.prefix) || a.prefix < 0 || a.prefix > max) {
      throw new RangeError(`prefix of ${a.address} must be 0..${max}`);
    }
    return { ...p, prefix: a.prefix, text: `${a.address}/${a.prefix}` };
  });
  const nl = new RtNetlink();
  try {
    const link = (flags: number, change: number, attrs: Uint8Array[]) => {
      const ifi = new Uint8Array(16);
      const v = new DataView(ifi.buffer);
      v.setInt32(4, index, true);
      v.setUint32(8, flags, true);
      v.setUint32(12, change, true);
      return concat([ifi, ...attrs]);
    };
    if (cfg.mtu !== undefined) {
      const m = new Uint8Array(4);
      new DataView(m.buffer).setUint32(0, cfg.mtu, true);
      nl.request(`set MTU ${cfg.mtu} on ${name}`, RTM_NEWLINK, 0, link(0, 0, [attr(IFLA_MTU, m)]));
    }
    // Up before the addresses: an IPv6 address added to a down link goes
    // through (asynchronous) DAD work when the link comes up, and is not
    // usable at once; added to an up link with NODAD, it is.
    if (cfg.up ?? true) {
      nl.request(`set ${name} up`, RTM_NEWLINK, 0, link(IFF_UP, IFF_UP, []));
    }
    for (const a of parsed) {
      const ifa = new Uint8Array(8);
      ifa[0] = a.family;
      ifa[1] = a.prefix;
      ifa[2] = a.family === AF_INET6 ? IFA_F_NODAD : 0;
      ifa[3] = 0; // RT_SCOPE_UNIVERSE
      new DataView(ifa.buffer).setUint32(4, index, true);
      nl.request(
        `add address ${a.text} to ${name}`,
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_REPLACE,
        concat([ifa, attr(IFA_LOCAL, a.bytes), attr(IFA_ADDRESS, a.bytes)]),
      );
    }
    // The kernel installs an IPv6 address's local route from a work queue,
    // a moment after the add was acknowledged: until then a packet to it is
    // dropped (Ip6InAddrErrors). Wait, bounded, until each one routes locally.
    for (const a of parsed) {
      if (a.family !== AF_INET6 || !(cfg.up ?? true)) continue;
      const deadline = performance.now() + 2000;
      const rtm = new Uint8Array(12);
      rtm[0] = AF_INET6;
      rtm[1] = 128;
      const q = concat([rtm, attr(RTA_DST, a.bytes)]);
      while (nl.request(`look up ${a.text}`, RTM_GETROUTE, 0, q, RTM_NEWROUTE)[7] !== RTN_LOCAL) {
        if (performance.now() > deadline) {
          throw new TunError("os", `address ${a.text} on ${name} did not become usable`);
        }
        Atomics.wait(SLEEPER, 0, 0, 1);
      }
    }
  } finally {
    nl.close();
  }
}

const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/**
 * Runs `fn` (synchronous: no await inside) with the JS thread in network
 * namespace `name` (`/run/netns/<name>`, as `ip netns add` makes it), then
 * puts the thread back. Sockets and TUN devices opened inside stay in that
 * namespace. Needs CAP_SYS_ADMIN.
 */
export function inNetns<T>(name: string, fn: () => T): T {
  if (name.includes("/") || name === "" || name === "." || name === "..") {
    throw new TypeError(`bad namespace name: ${name}`);
  }
  const c = libc();
  const own = c.open(cString("/proc/thread-self/ns/net"), O_RDONLY | O_CLOEXEC);
  if (own < 0) throw new OsError("open /proc/thread-self/ns/net", errno());
  try {
    const target = c.open(cString(`/run/netns/${name}`), O_RDONLY | O_CLOEXEC);
    if (target < 0) {
      const e = errno();
      throw new TunError(
        "os",
        `network namespace ${name}: ${new OsError(`open /run/netns/${name}`, e).message}`,
        e,
      );
    }
    const r = c.setns(target, CLONE_NEWNET);
    const e = errno();
    c.close(target);
    if (r < 0) {
      if (e === EPERM) {
        throw new TunError("permission", `enter netns ${name}: needs root or CAP_SYS_ADMIN`, e);
      }
      throw new OsError(`setns ${name}`, e);
    }
    let result: T;
    try {
      result = fn();
    } finally {
      // The JS thread left in another namespace would misdirect every later
      // socket: failing to return is fatal for this process's networking.
      if (c.setns(own, CLONE_NEWNET) < 0) {
        console.error(`setns back to the original namespace failed: errno ${errno()}`);
        Deno.exit(70);
      }
    }
    return result;
  } finally {
    c.close(own);
  }
}
