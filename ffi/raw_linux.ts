/**
 * Raw IPv4 TCP sockets through FFI (Linux), for the fake-TCP carrier
 * (`shared/carrier/faketcp/`): `socket(AF_INET, SOCK_RAW, IPPROTO_TCP)` with
 * `IP_HDRINCL` (we write the IPv4 header, so the source address the TCP
 * checksum covers is exactly the one sent), a classic BPF filter
 * (`SO_ATTACH_FILTER`) so the kernel copies us only the segments of our port
 * instead of every inbound TCP segment, `recvmmsg` on a worker thread (up to
 * 64 packets per call) and `sendmmsg` of the packets queued in a task.
 * Packets are built straight into the send slots ({@link RawTcpSocket.slot}):
 * no copy and no allocation per packet.
 *
 * Also here: a TCP socket bound and never listening, which reserves a port
 * against every other kernel socket ({@link reserveTcpPort}), and the source
 * address the routing table picks for a destination ({@link routeSource}).
 * Each takes an optional network namespace: the socket is created inside it
 * (a socket stays in the namespace it was made in), which is how tests run
 * both ends in one process.
 * @module
 */

import { inNetns } from "./netlink_linux.ts";

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_IP = 0;
const IPPROTO_TCP = 6;
const IP_HDRINCL = 3;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SO_RCVTIMEO = 20;
const SO_ATTACH_FILTER = 26;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const SO_MARK = 36;
const MSG_DONTWAIT = 0x40;
const MSG_WAITFORONE = 0x10000;
const EADDRINUSE = 98;
const EPERM = 1;

const BATCH = 64;
/** Receive slot: a whole IPv4 packet up to 16 KiB (larger ones arrive truncated and fail to parse). */
const SLOT = 16384;
/** Send slot: IPv4 + TCP + one datagram of an Ethernet-sized path, with room to spare. */
export const RAW_SEND_SLOT = 2048;
const NAME = 16; // sizeof(struct sockaddr_in)
const MMSG = 64; // sizeof(struct mmsghdr) on LP64
const IOV = 16;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  recvmmsg: {
    parameters: ["i32", "buffer", "u32", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;
function sym() {
  if (Deno.build.os !== "linux") throw new Error("raw sockets are wired for Linux only");
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

/** Parses dotted-quad IPv4 text into 4 bytes, or null. */
export function ipv4Bytes(s: string): Uint8Array | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const b = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const v = Number(m[i + 1]);
    if (v > 255) return null;
    b[i] = v;
  }
  return b;
}

function sockaddr4(ip: Uint8Array, port: number): Uint8Array<ArrayBuffer> {
  const name = new Uint8Array(NAME);
  const v = new DataView(name.buffer);
  v.setUint16(0, AF_INET, true);
  v.setUint16(2, port);
  name.set(ip, 4);
  return name;
}

function withNs<T>(netns: string | undefined, fn: () => T): T {
  return netns === undefined ? fn() : inNetns(netns, fn);
}

/** An OS call failed; `code` is errno. */
export class RawSocketError extends Error {
  constructor(readonly call: string, readonly code: number, detail?: string) {
    super(`${call}: ${detail ?? `errno ${code}`}`);
    this.name = "RawSocketError";
  }
}

/**
 * A classic BPF program accepting IPv4 TCP packets to `dstPort` (and from
 * `srcPort` when given): 8-byte `sock_filter` instructions.
 */
export function tcpPortFilter(dstPort: number, srcPort?: number): Uint8Array<ArrayBuffer> {
  const ins: [number, number, number, number][] = [];
  ins.push([0xb1, 0, 0, 0]); // ldxb 4*([0]&0xf): X = IP header length
  if (srcPort !== undefined) {
    ins.push([0x48, 0, 0, 0]); // ldh [x+0]: source port
    ins.push([0x15, 0, 3, srcPort]); // jeq #srcPort, next, drop
  }
  ins.push([0x48, 0, 0, 2]); // ldh [x+2]: destination port
  ins.push([0x15, 0, 1, dstPort]); // jeq #dstPort, accept, drop
  ins.push([0x06, 0, 0, 0x40000]); // ret: the whole packet
  ins.push([0x06, 0, 0, 0]); // ret 0: drop
  const out = new Uint8Array(ins.length * 8);
  const v = new DataView(out.buffer);
  ins.forEach(([code, jt, jf, k], i) => {
    v.setUint16(i * 8, code, true);
    v.setUint8(i * 8 + 2, jt);
    v.setUint8(i * 8 + 3, jf);
    v.setUint32(i * 8 + 4, k, true);
  });
  return out;
}

/** Options of {@link RawTcpSocket}. */
export interface RawTcpOptions {
  /** Segments to this local TCP port are received (the BPF filter). */
  localPort: number;
  /** …and only from this remote port, when given (a client link). */
  remotePort?: number;
  /** Bind to this local IPv4 address (only packets to it are received); default any. */
  bind?: string;
  /** Connect to this remote IPv4 address (only packets from it are received). */
  connect?: string;
  /** Create the socket inside this named network namespace (`/run/netns/NAME`). */
  netns?: string;
  /** Kernel receive buffer, bytes (default 4 MiB). */
  receiveBuffer?: number;
  /** Kernel send buffer, bytes (default 4 MiB). */
  sendBuffer?: number;
  /** Firewall mark of sent packets (TUN mode), if any. */
  mark?: number;
}

/** A raw IPv4 socket that sends and receives whole IPv4 + TCP packets. */
export class RawTcpSocket {
  /** The socket's descriptor. */
  readonly fd: number;
  private closed = false;
  private running: Promise<void> | null = null;

  private readonly rxData = new Uint8Array(BATCH * SLOT);
  private readonly rxIov = new Uint8Array(BATCH * IOV);
  private readonly rxMsgs = new Uint8Array(BATCH * MMSG);
  private readonly rxMsgView = new DataView(this.rxMsgs.buffer);

  private readonly txData = new Uint8Array(BATCH * RAW_SEND_SLOT);
  private readonly txNames = new Uint8Array(BATCH * NAME);
  private readonly txIov = new Uint8Array(BATCH * IOV);
  private readonly txMsgs = new Uint8Array(BATCH * MMSG);
  private readonly txMsgView = new DataView(this.txMsgs.buffer);
  private readonly txIovView = new DataView(this.txIov.buffer);
  private readonly txNameView = new DataView(this.txNames.buffer);
  private txCount = 0;
  private flushQueued = false;
  /** Packets the kernel refused (send buffer full, no route, too big). */
  sendDrops = 0;
  /** Packets received (after the BPF filter). */
  received = 0;

  constructor(opts: RawTcpOptions) {
    const s = sym();
    this.fd = withNs(opts.netns, () => s.socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_TCP));
    if (this.fd < 0) {
      const e = errno();
      throw new RawSocketError(
        "socket(AF_INET, SOCK_RAW, IPPROTO_TCP)",
        e,
        e === EPERM ? "not permitted (needs root or CAP_NET_RAW)" : undefined,
      );
    }
    const fd = this.fd;
    try {
      const int = new Uint8Array(4);
      const iv = new DataView(int.buffer);
      iv.setInt32(0, 1, true);
      if (s.setsockopt(fd, IPPROTO_IP, IP_HDRINCL, int, 4) < 0) {
        throw new RawSocketError("setsockopt IP_HDRINCL", errno());
      }
      // The filter first, so the socket queues as little as possible of other traffic.
      const prog = tcpPortFilter(opts.localPort, opts.remotePort);
      const fprog = new Uint8Array(16);
      const fv = new DataView(fprog.buffer);
      fv.setUint16(0, prog.length / 8, true);
      fv.setBigUint64(8, addrOf(prog), true);
      if (s.setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, fprog, 16) < 0) {
        throw new RawSocketError("setsockopt SO_ATTACH_FILTER", errno());
      }
      for (
        const [force, plain, size] of [
          [SO_RCVBUFFORCE, SO_RCVBUF, opts.receiveBuffer ?? 4 << 20],
          [SO_SNDBUFFORCE, SO_SNDBUF, opts.sendBuffer ?? 4 << 20],
        ]
      ) {
        iv.setInt32(0, size, true);
        if (s.setsockopt(fd, SOL_SOCKET, force, int, 4) < 0) {
          s.setsockopt(fd, SOL_SOCKET, plain, int, 4);
        }
      }
      if (opts.mark) {
        iv.setUint32(0, opts.mark >>> 0, true);
        if (s.setsockopt(fd, SOL_SOCKET, SO_MARK, int, 4) < 0) {
          throw new RawSocketError("setsockopt SO_MARK", errno());
        }
      }
      const tv = new Uint8Array(16);
      new DataView(tv.buffer).setBigInt64(8, 200_000n, true); // 200 ms: lets close() be noticed
      s.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16);
      if (opts.bind !== undefined && opts.bind !== "0.0.0.0") {
        const ip = ipv4Bytes(opts.bind);
        if (!ip) throw new TypeError(`not an IPv4 address: ${opts.bind}`);
        if (s.bind(fd, sockaddr4(ip, 0), NAME) < 0) throw new RawSocketError("bind", errno());
      }
      if (opts.connect !== undefined) {
        const ip = ipv4Bytes(opts.connect);
        if (!ip) throw new TypeError(`not an IPv4 address: ${opts.connect}`);
        if (s.connect(fd, sockaddr4(ip, 0), NAME) < 0) {
          throw new RawSocketError("connect", errno());
        }
      }
      // Packets queued before the filter was attached are dropped by the parser above.
      this.prepare();
    } catch (e) {
      s.close(fd);
      throw e;
    }
  }

  private prepare(): void {
    const base = addrOf(this.rxData);
    const iov = addrOf(this.rxIov);
    const iv = new DataView(this.rxIov.buffer);
    for (let i = 0; i < BATCH; i++) {
      iv.setBigUint64(i * IOV, base + BigInt(i * SLOT), true);
      iv.setBigUint64(i * IOV + 8, BigInt(SLOT), true);
      const o = i * MMSG;
      this.rxMsgView.setBigUint64(o, 0n, true); // no name wanted
      this.rxMsgView.setUint32(o + 8, 0, true);
      this.rxMsgView.setBigUint64(o + 16, iov + BigInt(i * IOV), true);
      this.rxMsgView.setBigUint64(o + 24, 1n, true);
    }
    const tbase = addrOf(this.txData);
    const names = addrOf(this.txNames);
    const tiov = addrOf(this.txIov);
    for (let i = 0; i < BATCH; i++) {
      this.txIovView.setBigUint64(i * IOV, tbase + BigInt(i * RAW_SEND_SLOT), true);
      const o = i * MMSG;
      this.txMsgView.setBigUint64(o, names + BigInt(i * NAME), true);
      this.txMsgView.setUint32(o + 8, NAME, true);
      this.txMsgView.setBigUint64(o + 16, tiov + BigInt(i * IOV), true);
      this.txMsgView.setBigUint64(o + 24, 1n, true);
      this.txNameView.setUint16(i * NAME, AF_INET, true);
    }
  }

  /** Receives until closed: `onPacket` gets each whole IPv4 packet, valid only during the call. */
  run(onPacket: (packet: Uint8Array) => void, afterBatch?: () => void): Promise<void> {
    if (this.closed && !this.running) return Promise.resolve(); // close() closed the descriptor
    this.running ??= this.loop(onPacket, afterBatch);
    return this.running;
  }

  private async loop(
    onPacket: (packet: Uint8Array) => void,
    afterBatch?: () => void,
  ): Promise<void> {
    const s = sym();
    const mv = this.rxMsgView;
    try {
      while (!this.closed) {
        const n = await s.recvmmsg(this.fd, this.rxMsgs, BATCH, MSG_WAITFORONE, null);
        if (this.closed) break;
        if (n <= 0) continue; // timeout (EAGAIN) or EINTR
        this.received += n;
        for (let i = 0; i < n; i++) {
          const len = Math.min(mv.getUint32(i * MMSG + 56, true), SLOT);
          try {
            onPacket(this.rxData.subarray(i * SLOT, i * SLOT + len));
          } catch {
            // A handler failure must not stop the socket.
          }
        }
        try {
          afterBatch?.();
        } catch {
          // as above
        }
        this.flush();
      }
    } finally {
      s.close(this.fd);
    }
  }

  /**
   * Offset in {@link sendBuffer} of the next send slot ({@link RAW_SEND_SLOT}
   * bytes) to build a packet in; {@link commit} queues it. Sends what is queued first when every slot is
   * taken.
   */
  slot(): number {
    if (this.txCount === BATCH) this.flush();
    return this.txCount * RAW_SEND_SLOT;
  }

  /** The send buffer {@link slot} offsets point into (build at most {@link RAW_SEND_SLOT} bytes). */
  get sendBuffer(): Uint8Array {
    return this.txData;
  }

  /** Queues the packet of `len` bytes just built in {@link slot} for IPv4 address `dst`. */
  commit(len: number, dst: Uint8Array): void {
    if (this.closed || len <= 0 || len > RAW_SEND_SLOT) return;
    const i = this.txCount++;
    this.txIovView.setUint32(i * IOV + 8, len, true);
    this.txIovView.setUint32(i * IOV + 12, 0, true);
    const no = i * NAME + 4;
    this.txNames[no] = dst[0];
    this.txNames[no + 1] = dst[1];
    this.txNames[no + 2] = dst[2];
    this.txNames[no + 3] = dst[3];
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushTask);
    }
  }

  private readonly flushTask = (): void => {
    this.flushQueued = false;
    this.flush();
  };

  /** Sends everything queued now. */
  flush(): void {
    if (this.txCount === 0) return;
    if (this.closed) {
      this.txCount = 0;
      return;
    }
    const s = sym();
    let off = 0;
    while (off < this.txCount) {
      const msgs = off === 0 ? this.txMsgs : this.txMsgs.subarray(off * MMSG);
      const r = s.sendmmsg(this.fd, msgs, this.txCount - off, MSG_DONTWAIT);
      if (r <= 0) {
        this.sendDrops++;
        off++;
        continue;
      }
      off += r;
    }
    this.txCount = 0;
  }

  /** Closes the socket (once a pending receive returns, within 200 ms). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (!this.running) sym().close(this.fd);
  }
}

/** A TCP socket bound to a port and never listening: keeps every other socket off it. */
export interface PortReservation {
  /** The bound port (the kernel's pick when 0 was asked). */
  readonly port: number;
  /** Releases the port. */
  close(): void;
}

/**
 * Binds a TCP socket to `host:port` (port 0: an ephemeral port the kernel
 * picks among those no socket holds) without listening.
 * @throws {Deno.errors.AddrInUse} when another socket holds the port.
 */
export function reserveTcpPort(host: string, port: number, netns?: string): PortReservation {
  const s = sym();
  const ip = ipv4Bytes(host);
  if (!ip) throw new TypeError(`not an IPv4 address: ${host}`);
  const fd = withNs(netns, () => s.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
  if (fd < 0) throw new RawSocketError("socket(SOCK_STREAM)", errno());
  const name = sockaddr4(ip, port);
  if (s.bind(fd, name, NAME) < 0) {
    const e = errno();
    s.close(fd);
    if (e === EADDRINUSE) {
      throw new Deno.errors.AddrInUse(`tcp ${host}:${port}: another socket holds the port`);
    }
    throw new RawSocketError(`bind tcp ${host}:${port}`, e);
  }
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, NAME, true);
  s.getsockname(fd, name, len);
  const bound = new DataView(name.buffer).getUint16(2);
  let open = true;
  return {
    port: bound,
    close() {
      if (open) {
        open = false;
        s.close(fd);
      }
    },
  };
}

/** The local IPv4 address the routing table uses towards `dst` (a connected UDP socket's name). */
export function routeSource(dst: string, netns?: string): string {
  const s = sym();
  const ip = ipv4Bytes(dst);
  if (!ip) throw new TypeError(`not an IPv4 address: ${dst}`);
  const fd = withNs(netns, () => s.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd < 0) throw new RawSocketError("socket(SOCK_DGRAM)", errno());
  try {
    if (s.connect(fd, sockaddr4(ip, 9), NAME) < 0) {
      throw new RawSocketError(`no route to ${dst}`, errno());
    }
    const name = new Uint8Array(NAME);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, NAME, true);
    if (s.getsockname(fd, name, len) < 0) throw new RawSocketError("getsockname", errno());
    return `${name[4]}.${name[5]}.${name[6]}.${name[7]}`;
  } finally {
    s.close(fd);
  }
}
