/**
 * A Linux UDP socket through FFI: `recvmmsg` (on a worker thread, up to 64
 * datagrams per call) and `sendmmsg` (queued datagrams leave in one call at the
 * end of the task), with large kernel buffers so bursts are absorbed instead of
 * dropped. The per-datagram paths allocate nothing per datagram beyond the
 * received view: a destination's sockaddr is encoded once per address object
 * and copied, and a source address is looked up by its raw words (the last
 * one compared first). Importing this module registers it with `openUdp`.
 * @module
 */

import { type DatagramSocket, registerFfiUdp, type UdpOptions } from "../shared/net/datagram.ts";
import { formatIPv6, parseIPv4, parseIPv6 } from "../shared/net/ip.ts";

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const SO_RCVTIMEO = 20;
const SO_MARK = 36;
const SO_REUSEPORT = 15;
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;
const MSG_DONTWAIT = 0x40;
const MSG_WAITFORONE = 0x10000;
const EAGAIN = 11;

const BATCH = 64;
const SLOT = 65536;
const SEND_SLOT = 2048;
const NAME = 28; // sizeof(struct sockaddr_in6)
const MMSG = 64; // sizeof(struct mmsghdr) on LP64
const IOV = 16;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  recvmmsg: {
    parameters: ["i32", "buffer", "u32", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  malloc: { parameters: ["usize"], result: "pointer" },
  free: { parameters: ["pointer"], result: "void" },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;
function sym() {
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

function errno(): number {
  const p = sym().__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

function addrOf(buf: Uint8Array<ArrayBuffer>): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

/** Writes a sockaddr for `host:port` into `out` (28 bytes); returns its length. */
function encodeSockaddr(
  out: DataView,
  off: number,
  host: string,
  port: number,
  v6: boolean,
): number {
  if (v6) {
    const v4 = parseIPv4(host);
    const b = v4 ? mapped(v4) : parseIPv6(host);
    if (!b) throw new TypeError(`not an IP address: ${host}`);
    out.setUint16(off, AF_INET6, true);
    out.setUint16(off + 2, port, false);
    out.setUint32(off + 4, 0);
    for (let i = 0; i < 16; i++) out.setUint8(off + 8 + i, b[i]);
    out.setUint32(off + 24, 0);
    return 28;
  }
  const b = parseIPv4(host);
  if (!b) throw new TypeError(`not an IPv4 address: ${host}`);
  out.setUint16(off, AF_INET, true);
  out.setUint16(off + 2, port, false);
  for (let i = 0; i < 4; i++) out.setUint8(off + 4 + i, b[i]);
  for (let i = 8; i < 16; i++) out.setUint8(off + i, 0);
  return 16;
}

/** A destination's encoded sockaddr, valid while the address object still says `host:port`. */
interface EncodedName {
  readonly host: string;
  readonly port: number;
  readonly bytes: Uint8Array;
  readonly len: number;
}

function mapped(v4: Uint8Array): Uint8Array {
  const b = new Uint8Array(16);
  b[10] = 0xff;
  b[11] = 0xff;
  b.set(v4, 12);
  return b;
}

/** UDP over libc with batched receive and send. */
export class LinuxUdpSocket implements DatagramSocket {
  readonly kind = "linux-ffi";
  readonly addr: Deno.NetAddr;
  /** The socket's descriptor. */
  readonly fd: number;
  private readonly v6: boolean;
  private closed = false;
  private running: Promise<void> | null = null;

  // Receive side: BATCH slots, each with its own iovec and name buffer. The
  // kernel writes into them while the nonblocking recvmmsg runs on another
  // thread: a socket of a worker thread (reusePort) gets them from malloc, so
  // that a worker terminated mid-call leaves the kernel writing into memory
  // that is still there (leaked then) rather than into its freed heap.
  private readonly external: Deno.PointerObject[] = [];
  private readonly rxData: Uint8Array<ArrayBuffer>;
  private readonly rxNames: Uint8Array<ArrayBuffer>;
  private readonly rxIov: Uint8Array<ArrayBuffer>;
  private readonly rxMsgs: Uint8Array<ArrayBuffer>;
  private readonly rxMsgView: DataView;
  private readonly rxNameView: DataView;

  // Send side: a queue of up to BATCH datagrams.
  private readonly txData = new Uint8Array(BATCH * SEND_SLOT);
  private readonly txNames = new Uint8Array(BATCH * NAME);
  private readonly txIov = new Uint8Array(BATCH * IOV);
  private readonly txMsgs = new Uint8Array(BATCH * MMSG);
  private readonly txMsgView = new DataView(this.txMsgs.buffer);
  private readonly txIovView = new DataView(this.txIov.buffer);
  private txCount = 0;
  private flushQueued = false;
  /** Datagrams the kernel refused to queue (send buffer full). */
  sendDrops = 0;

  private readonly addrCache = new Map<string, Deno.NetAddr>();
  /** Encoded sockaddrs by destination object (the session keeps one per peer). */
  private readonly nameCache = new WeakMap<Deno.NetAddr, EncodedName>();
  // The last source seen: family, port and address words, and its object.
  private lastFamily = -1;
  private lastPort = -1;
  private lastW0 = 0;
  private lastW1 = 0;
  private lastW2 = 0;
  private lastW3 = 0;
  private lastFrom: Deno.NetAddr | null = null;

  constructor(hostname: string, port: number, opts: UdpOptions = {}) {
    const s = sym();
    const rx = (len: number): Uint8Array<ArrayBuffer> => {
      if (!opts.reusePort) return new Uint8Array(len);
      const p = s.malloc(BigInt(len));
      if (p === null) throw new Error("malloc failed");
      this.external.push(p);
      return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, len));
    };
    this.rxData = rx(BATCH * SLOT);
    this.rxNames = rx(BATCH * NAME);
    this.rxIov = rx(BATCH * IOV);
    this.rxMsgs = rx(BATCH * MMSG);
    this.rxMsgView = new DataView(this.rxMsgs.buffer);
    this.rxNameView = new DataView(this.rxNames.buffer);
    this.v6 = hostname.includes(":");
    const fd = s.socket(this.v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      const e = errno();
      this.freeExternal();
      throw new Error(`socket: errno ${e}`);
    }
    this.fd = fd;
    try {
      const int = new Uint8Array(4);
      const iv = new DataView(int.buffer);
      if (this.v6) {
        iv.setInt32(0, 0, true); // dual-stack, as Deno does
        s.setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, int, 4);
      }
      for (
        const [force, plain, size] of [
          [SO_RCVBUFFORCE, SO_RCVBUF, opts.receiveBuffer ?? 8 << 20],
          [SO_SNDBUFFORCE, SO_SNDBUF, opts.sendBuffer ?? 4 << 20],
        ]
      ) {
        iv.setInt32(0, size, true);
        if (s.setsockopt(fd, SOL_SOCKET, force, int, 4) < 0) {
          s.setsockopt(fd, SOL_SOCKET, plain, int, 4);
        }
      }
      if (opts.mark) {
        // TUN mode: the client's own packets carry its mark and bypass the TUN.
        iv.setUint32(0, opts.mark >>> 0, true);
        if (s.setsockopt(fd, SOL_SOCKET, SO_MARK, int, 4) < 0) {
          throw new Error(`setsockopt SO_MARK: errno ${errno()} (needs CAP_NET_ADMIN)`);
        }
      }
      if (opts.reusePort) {
        // Worker threads of one server share the port; the kernel spreads by 4-tuple hash.
        iv.setInt32(0, 1, true);
        if (s.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, int, 4) < 0) {
          throw new Error(`setsockopt SO_REUSEPORT: errno ${errno()}`);
        }
      }
      const tv = new Uint8Array(16);
      new DataView(tv.buffer).setBigInt64(8, 200_000n, true); // 200 ms: lets close() be noticed
      s.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16);
      const name = new Uint8Array(NAME);
      const len = encodeSockaddr(new DataView(name.buffer), 0, hostname, port, this.v6);
      if (s.bind(fd, name, len) < 0) {
        const e = errno();
        throw e === 98
          ? new Deno.errors.AddrInUse(`bind ${hostname}:${port}: address in use`)
          : new Error(`bind: errno ${e}`);
      }
      const lenBuf = new Uint8Array(4);
      new DataView(lenBuf.buffer).setUint32(0, NAME, true);
      s.getsockname(fd, name, lenBuf);
      this.addr = this.decodeAddr(new DataView(name.buffer), 0);
    } catch (e) {
      s.close(fd);
      this.freeExternal();
      throw e;
    }
    this.prepareRx();
    this.prepareTx();
  }

  private prepareRx(): void {
    const base = addrOf(this.rxData);
    const names = addrOf(this.rxNames);
    const iov = addrOf(this.rxIov);
    const iv = new DataView(this.rxIov.buffer);
    for (let i = 0; i < BATCH; i++) {
      iv.setBigUint64(i * IOV, base + BigInt(i * SLOT), true);
      iv.setBigUint64(i * IOV + 8, BigInt(SLOT), true);
    }
    const mv = this.rxMsgView;
    for (let i = 0; i < BATCH; i++) {
      const o = i * MMSG;
      mv.setBigUint64(o, names + BigInt(i * NAME), true);
      mv.setUint32(o + 8, NAME, true);
      mv.setBigUint64(o + 16, iov + BigInt(i * IOV), true);
      mv.setBigUint64(o + 24, 1n, true);
    }
  }

  private prepareTx(): void {
    const base = addrOf(this.txData);
    const names = addrOf(this.txNames);
    const iov = addrOf(this.txIov);
    for (let i = 0; i < BATCH; i++) {
      this.txIovView.setBigUint64(i * IOV, base + BigInt(i * SEND_SLOT), true);
      const o = i * MMSG;
      this.txMsgView.setBigUint64(o, names + BigInt(i * NAME), true);
      this.txMsgView.setBigUint64(o + 16, iov + BigInt(i * IOV), true);
      this.txMsgView.setBigUint64(o + 24, 1n, true);
    }
  }

  private decodeAddr(v: DataView, off: number): Deno.NetAddr {
    const family = v.getUint16(off, true);
    const port = v.getUint16(off + 2, false);
    let hostname: string;
    if (family === AF_INET) {
      hostname = `${v.getUint8(off + 4)}.${v.getUint8(off + 5)}.${v.getUint8(off + 6)}.${
        v.getUint8(off + 7)
      }`;
    } else {
      const b = new Uint8Array(v.buffer, v.byteOffset + off + 8, 16);
      const isMapped = b[10] === 0xff && b[11] === 0xff && b.subarray(0, 10).every((x) => x === 0);
      hostname = isMapped ? `${b[12]}.${b[13]}.${b[14]}.${b[15]}` : formatIPv6(b);
    }
    return { transport: "udp", hostname, port };
  }

  /**
   * Source address of rx slot `i`, cached so the same peer yields the same
   * object. A run of datagrams from one peer (the bulk case) is matched
   * against the previous source by its raw words, without building a key.
   */
  private sourceOf(i: number): Deno.NetAddr {
    const v = this.rxNameView;
    const o = i * NAME;
    const family = v.getUint16(o, true);
    const port = v.getUint16(o + 2);
    const v4 = family === AF_INET;
    const w0 = v.getUint32(v4 ? o + 4 : o + 8);
    const w1 = v4 ? 0 : v.getUint32(o + 12);
    const w2 = v4 ? 0 : v.getUint32(o + 16);
    const w3 = v4 ? 0 : v.getUint32(o + 20);
    if (
      this.lastFrom !== null && family === this.lastFamily && port === this.lastPort &&
      w0 === this.lastW0 && w1 === this.lastW1 && w2 === this.lastW2 && w3 === this.lastW3
    ) {
      return this.lastFrom;
    }
    const key = v4 ? `${w0}:${port}` : `${w0},${w1},${w2},${w3}:${port}`;
    let a = this.addrCache.get(key);
    if (!a) {
      if (this.addrCache.size > 4096) this.addrCache.clear();
      a = this.decodeAddr(v, o);
      this.addrCache.set(key, a);
    }
    this.lastFamily = family;
    this.lastPort = port;
    this.lastW0 = w0;
    this.lastW1 = w1;
    this.lastW2 = w2;
    this.lastW3 = w3;
    this.lastFrom = a;
    return a;
  }

  /**
   * The encoded sockaddr for `to`, from the cache when the same object was
   * sent to before (and still names the same host and port); null if `to`
   * is not an IP address this socket can reach.
   */
  private nameFor(to: Deno.NetAddr): EncodedName | null {
    const c = this.nameCache.get(to);
    if (c !== undefined && c.host === to.hostname && c.port === to.port) return c;
    const bytes = new Uint8Array(NAME);
    let len: number;
    try {
      len = encodeSockaddr(new DataView(bytes.buffer), 0, to.hostname, to.port, this.v6);
    } catch {
      return null;
    }
    const e: EncodedName = { host: to.hostname, port: to.port, bytes, len };
    this.nameCache.set(to, e);
    return e;
  }

  run(onDatagram: (data: Uint8Array, from: Deno.NetAddr) => void): Promise<void> {
    this.running ??= this.loop(onDatagram);
    return this.running;
  }

  private async loop(onDatagram: (data: Uint8Array, from: Deno.NetAddr) => void): Promise<void> {
    const s = sym();
    const mv = this.rxMsgView;
    try {
      // The kernel rewrites msg_namelen only in the slots it fills: reset those.
      let filled = BATCH;
      while (!this.closed) {
        for (let i = 0; i < filled; i++) mv.setUint32(i * MMSG + 8, NAME, true);
        filled = 0;
        const n = await s.recvmmsg(this.fd, this.rxMsgs, BATCH, MSG_WAITFORONE, null);
        if (this.closed) break;
        if (n <= 0) continue; // timeout (EAGAIN) or EINTR
        filled = n;
        for (let i = 0; i < n; i++) {
          const len = mv.getUint32(i * MMSG + 56, true);
          try {
            onDatagram(this.rxData.subarray(i * SLOT, i * SLOT + len), this.sourceOf(i));
          } catch {
            // A handler failure must not stop the socket.
          }
        }
        this.flush();
      }
    } finally {
      s.close(this.fd);
      this.freeExternal();
    }
  }

  /** Frees the malloc'd receive buffers (once no call can write into them). */
  private freeExternal(): void {
    for (const p of this.external.splice(0)) sym().free(p);
  }

  send(data: Uint8Array, to: Deno.NetAddr): void {
    if (this.closed) return;
    if (data.length > SEND_SLOT) {
      this.sendLarge(data, to);
      return;
    }
    const name = this.nameFor(to);
    if (name === null) return;
    if (this.txCount === BATCH) this.flush();
    const i = this.txCount++;
    this.txData.set(data, i * SEND_SLOT);
    // iov_len (a size_t) as two 32-bit words: no BigInt per datagram.
    this.txIovView.setUint32(i * IOV + 8, data.length, true);
    this.txIovView.setUint32(i * IOV + 12, 0, true);
    this.txNames.set(name.bytes, i * NAME);
    this.txMsgView.setUint32(i * MMSG + 8, name.len, true);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushTask);
    }
  }

  /**
   * Sends a datagram bigger than a queue slot (an MTU above 2 KiB) on its own:
   * what is queued goes first, then slot 0's iovec points at a private copy.
   */
  private sendLarge(data: Uint8Array, to: Deno.NetAddr): void {
    const name = this.nameFor(to);
    if (name === null) return;
    this.flush();
    const copy = data.slice() as Uint8Array<ArrayBuffer>;
    this.txNames.set(name.bytes, 0);
    this.txMsgView.setUint32(8, name.len, true);
    const savedBase = this.txIovView.getBigUint64(0, true);
    this.txIovView.setBigUint64(0, addrOf(copy), true);
    this.txIovView.setBigUint64(8, BigInt(copy.length), true);
    if (sym().sendmmsg(this.fd, this.txMsgs, 1, MSG_DONTWAIT) !== 1) this.sendDrops++;
    this.txIovView.setBigUint64(0, savedBase, true);
  }

  private readonly flushTask = (): void => {
    this.flushQueued = false;
    this.flush();
  };

  flush(): void {
    let off = 0;
    const s = sym();
    while (off < this.txCount) {
      const msgs = off === 0 ? this.txMsgs : this.txMsgs.subarray(off * MMSG);
      const r = s.sendmmsg(this.fd, msgs, this.txCount - off, MSG_DONTWAIT);
      if (r <= 0) {
        if (r < 0 && errno() !== EAGAIN) {
          // Unreachable destination or similar: drop this one and go on.
        }
        this.sendDrops++;
        off++;
        continue;
      }
      off += r;
    }
    this.txCount = 0;
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    // The receive loop closes the descriptor once its pending call returns;
    // without a running loop, close it here.
    if (!this.running) {
      sym().close(this.fd);
      this.freeExternal();
    }
  }
}

registerFfiUdp((hostname, port, opts) => {
  if (Deno.build.os !== "linux") throw new Error("FFI UDP is Linux only");
  return new LinuxUdpSocket(hostname, port, opts);
});
