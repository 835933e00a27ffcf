/**
 * Linux TUN devices through `/dev/net/tun` (FFI): `ioctl(TUNSETIFF)` with
 * IFF_TUN | IFF_NO_PI (whole IP packets, no packet-information header), an
 * O_NONBLOCK descriptor, and the {@link TunDevice} batch interface.
 *
 * Reading: a batch first drains the descriptor with plain `read` until
 * EAGAIN (or the batch is full) in the calling task; only when nothing is
 * there does it wait, with `poll()` on a worker thread (a nonblocking FFI
 * call) over the TUN descriptor and an eventfd that {@link LinuxTun.close}
 * signals, so a pending read ends at once. Writing: one `write` per packet
 * (`writev` with the virtio header when IFF_VNET_HDR is on).
 *
 * Optional IFF_VNET_HDR + TUNSETOFFLOAD (TSO4/TSO6, checksum, and USO where
 * the kernel has it): each packet then carries a `virtio_net_hdr`, mapped to
 * and from the {@link PacketBatch} offload arrays. See docs/tun.md for what
 * the measurements said about it.
 *
 * Interface configuration (MTU, addresses, up) goes over rtnetlink
 * (`ffi/netlink_linux.ts`).
 * @module
 */

import {
  checkWriteBatch,
  CSUM_PARTIAL,
  CSUM_VALID,
  MAX_PACKET,
  NO_OFFLOAD,
  type PacketBatch,
  type TunDevice,
  TunError,
  type TunOffload,
} from "../shared/tun/device.ts";
import {
  cString,
  EACCES,
  EAGAIN,
  EBADFD,
  EINTR,
  EPERM,
  errno,
  libc,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  OsError,
} from "./libc.ts";
import { configureInterface, inNetns, type InterfaceAddress } from "./netlink_linux.ts";

const TUNSETIFF = 0x400454ca;
const TUNSETOFFLOAD = 0x400454d0;
const TUNSETVNETHDRSZ = 0x400454d8;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const TUN_F_CSUM = 0x01;
const TUN_F_TSO4 = 0x02;
const TUN_F_TSO6 = 0x04;
const TUN_F_USO4 = 0x20;
const TUN_F_USO6 = 0x40;
const IFNAMSIZ = 16;
const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const POLLIN = 1;
/** sizeof(struct virtio_net_hdr): flags, gso_type, hdr_len, gso_size, csum_start, csum_offset. */
const VNET_HDR = 10;
const VIRTIO_NET_HDR_GSO_ECN = 0x80;
/** Longest wait in one poll: a safety net; close() wakes the poll through the eventfd anyway. */
const POLL_MS = 1000;

/** Options for {@link LinuxTun.open}. */
export interface LinuxTunOptions {
  /** Interface name (1‥15 bytes; `%d` lets the kernel number it). */
  name: string;
  /**
   * MTU to set (68‥65535). Unset: the device is not configured and its MTU
   * is taken as 65535 for read-slot purposes (the kernel default is 1500,
   * but something else may raise it).
   */
  mtu?: number;
  /** Addresses to add (IPv4 and/or IPv6). */
  addresses?: readonly InterfaceAddress[];
  /** Bring the link up (default: true when `mtu` or `addresses` is given). */
  up?: boolean;
  /**
   * IFF_VNET_HDR with TSO/checksum (and USO where available) offloads: the
   * kernel hands over and accepts super-segments up to 64 KiB.
   */
  offload?: boolean;
  /** Create the device inside this named network namespace (`ip netns add`). */
  netns?: string;
}

/** Batch-specific FFI state: the virtio headers and their iovecs (vnet mode). */
interface VnetScratch {
  hdr: Uint8Array<ArrayBuffer>;
  hdrView: DataView;
  iov: Uint8Array<ArrayBuffer>;
  iovView: DataView;
  slotBase: number;
}

function addressOf(b: Uint8Array<ArrayBuffer>): number {
  return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b)));
}

/** A Linux TUN device. */
export class LinuxTun implements TunDevice {
  readonly offload: TunOffload;
  #closed = false;
  #fdClosed = false;
  #reading = false;
  readonly #fd: number;
  readonly #wake: number;
  readonly #vnet: boolean;
  readonly #pollfds = new Uint8Array(16);
  readonly #one = new Uint8Array(8);
  readonly #scratch = new WeakMap<PacketBatch, VnetScratch>();
  readonly #txHdr = new Uint8Array(VNET_HDR);
  readonly #txHdrView = new DataView(this.#txHdr.buffer);
  readonly #txIov = new Uint8Array(32);
  readonly #txIovView = new DataView(this.#txIov.buffer);
  /** The second iovec of `#txIov` alone (plain mode's writev). */
  readonly #txIov2 = this.#txIov.subarray(16);
  /** Packets the kernel refused on write (its queue full, or the link down). */
  writeDrops = 0;

  private constructor(
    readonly name: string,
    readonly mtu: number,
    fd: number,
    wake: number,
    offload: TunOffload,
  ) {
    this.#fd = fd;
    this.#wake = wake;
    this.#vnet = offload !== NO_OFFLOAD;
    this.offload = offload;
    const pv = new DataView(this.#pollfds.buffer);
    pv.setInt32(0, fd, true);
    pv.setInt16(4, POLLIN, true);
    pv.setInt32(8, wake, true);
    pv.setInt16(12, POLLIN, true);
    new DataView(this.#one.buffer).setBigUint64(0, 1n, true);
    const hdrAddr = addressOf(this.#txHdr);
    this.#txIovView.setUint32(0, hdrAddr >>> 0, true);
    this.#txIovView.setUint32(4, Math.floor(hdrAddr / 2 ** 32), true);
    this.#txIovView.setUint32(8, VNET_HDR, true);
  }

  /**
   * Creates (or attaches to) TUN device `name` — `open("tun0")` or
   * `open({ name, mtu, addresses, offload, netns })` — and configures it.
   * @throws {TunError} "permission" without root or CAP_NET_ADMIN, "os"
   *   for other failures (no /dev/net/tun, a busy name, …).
   */
  static open(opts: string | LinuxTunOptions): LinuxTun {
    const o: LinuxTunOptions = typeof opts === "string" ? { name: opts } : opts;
    if (o.mtu !== undefined && (!Number.isInteger(o.mtu) || o.mtu < 68 || o.mtu > MAX_PACKET)) {
      throw new RangeError(`mtu must be an integer in 68..${MAX_PACKET}`);
    }
    const make = () => {
      const dev = LinuxTun.create(o.name, o.offload ?? false, o.mtu ?? MAX_PACKET);
      const configure = o.mtu !== undefined || (o.addresses?.length ?? 0) > 0 || o.up === true;
      if (configure) {
        try {
          configureInterface(dev.name, {
            mtu: o.mtu,
            addresses: o.addresses,
            up: o.up ?? true,
          });
        } catch (e) {
          dev.close();
          throw e;
        }
      }
      return dev;
    };
    return o.netns === undefined ? make() : inNetns(o.netns, make);
  }

  private static create(name: string, offload: boolean, mtu: number): LinuxTun {
    const nameBytes = new TextEncoder().encode(name);
    if (nameBytes.length === 0 || nameBytes.length >= IFNAMSIZ) {
      throw new RangeError(`interface name must be 1..${IFNAMSIZ - 1} bytes`);
    }
    const c = libc();
    const fd = c.open(cString("/dev/net/tun"), O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      const e = errno();
      if (e === EPERM || e === EACCES) {
        throw new TunError("permission", "open /dev/net/tun: needs root or CAP_NET_ADMIN", e);
      }
      throw new TunError("os", new OsError("open /dev/net/tun", e).message, e);
    }
    const fail = (what: string): never => {
      const e = errno();
      c.close(fd);
      if (e === EPERM || e === EACCES) {
        throw new TunError("permission", `${what} ${name}: needs root or CAP_NET_ADMIN`, e);
      }
      throw new TunError("os", new OsError(`${what} ${name}`, e).message, e);
    };
    const ifr = new Uint8Array(40);
    ifr.set(nameBytes);
    const flags = IFF_TUN | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0);
    new DataView(ifr.buffer).setUint16(IFNAMSIZ, flags, true);
    if (c.ioctl(fd, BigInt(TUNSETIFF), ifr) < 0) fail("ioctl TUNSETIFF");
    let caps: TunOffload = NO_OFFLOAD;
    if (offload) {
      const sz = new Uint8Array(4);
      new DataView(sz.buffer).setInt32(0, VNET_HDR, true);
      if (c.ioctl(fd, BigInt(TUNSETVNETHDRSZ), sz) < 0) fail("ioctl TUNSETVNETHDRSZ");
      const base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
      let uso = true;
      if (c.ioctl_value(fd, BigInt(TUNSETOFFLOAD), BigInt(base | TUN_F_USO4 | TUN_F_USO6)) < 0) {
        uso = false;
        if (c.ioctl_value(fd, BigInt(TUNSETOFFLOAD), BigInt(base)) < 0) fail("TUNSETOFFLOAD");
      }
      caps = Object.freeze({ tso: true, uso, checksum: true });
    }
    const wake = c.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake < 0) fail("eventfd for");
    const actual = new TextDecoder().decode(ifr.subarray(0, ifr.indexOf(0)));
    return new LinuxTun(actual, mtu, fd, wake, caps);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The largest plain packet the kernel may hand over: what slots must hold. */
  get #readSlot(): number {
    return this.#vnet ? MAX_PACKET : this.mtu;
  }

  async readBatch(into: PacketBatch): Promise<number> {
    if (this.#closed) return 0;
    if (this.#reading) throw new TunError("busy", `${this.name}: a read is already pending`);
    if (into.slotSize < this.#readSlot) {
      throw new TunError(
        "slot",
        `${this.name}: batch slots of ${into.slotSize} < ${this.#readSlot}`,
      );
    }
    this.#reading = true;
    try {
      for (;;) {
        const n = this.#drain(into);
        if (n > 0 || this.#closed) return this.#closed ? 0 : n;
        const r = await libc().poll_blocking(this.#pollfds, 2n, POLL_MS);
        if (this.#closed) return 0;
        if (r < 0) {
          const e = errno();
          if (e !== EINTR && e !== 0) throw new TunError("os", `poll ${this.name}: errno ${e}`, e);
        }
      }
    } finally {
      this.#reading = false;
      if (this.#closed) this.#release();
    }
  }

  /** Reads what is there without waiting; sets `into.count`. */
  #drain(into: PacketBatch): number {
    const c = libc();
    const fd = this.#fd;
    const cap = into.capacity;
    let n = 0;
    if (!this.#vnet) {
      const slots = into.slots;
      const size = BigInt(into.slotSize); // once per batch, not per packet
      while (n < cap) {
        const r = Number(c.read(fd, slots[n], size));
        if (r < 0) {
          const e = errno();
          if (e === EINTR) continue;
          if (e === EAGAIN) break;
          into.count = n;
          if (n > 0) return n;
          if (e === EBADFD) return this.#gone();
          throw new TunError("os", `read ${this.name}: errno ${e}`, e);
        }
        into.lengths[n] = r;
        into.flags[n] = 0;
        into.gsoKind[n] = 0;
        into.gsoSize[n] = 0;
        into.hdrLen[n] = 0;
        into.csumStart[n] = 0;
        into.csumOffset[n] = 0;
        n++;
      }
      into.count = n;
      return n;
    }
    const s = this.#scratchFor(into);
    const hv = s.hdrView;
    const iv = s.iovView;
    const slotSize = into.slotSize;
    while (n < cap) {
      const at = s.slotBase + n * slotSize;
      iv.setUint32(16, at >>> 0, true);
      iv.setUint32(20, Math.floor(at / 2 ** 32), true);
      const r = Number(c.readv(fd, s.iov, 2));
      if (r < 0) {
        const e = errno();
        if (e === EINTR) continue;
        if (e === EAGAIN) break;
        into.count = n;
        if (n > 0) return n;
        if (e === EBADFD) return this.#gone();
        throw new TunError("os", `readv ${this.name}: errno ${e}`, e);
      }
      if (r < VNET_HDR) continue;
      const f = hv.getUint8(0);
      into.lengths[n] = r - VNET_HDR;
      into.flags[n] = ((f & 1) !== 0 ? CSUM_PARTIAL : 0) | ((f & 2) !== 0 ? CSUM_VALID : 0);
      into.gsoKind[n] = hv.getUint8(1) & ~VIRTIO_NET_HDR_GSO_ECN;
      into.hdrLen[n] = hv.getUint16(2, true);
      into.gsoSize[n] = hv.getUint16(4, true);
      into.csumStart[n] = hv.getUint16(6, true);
      into.csumOffset[n] = hv.getUint16(8, true);
      n++;
    }
    into.count = n;
    return n;
  }

  #scratchFor(b: PacketBatch): VnetScratch {
    let s = this.#scratch.get(b);
    if (s === undefined) {
      const hdr = new Uint8Array(16);
      const iov = new Uint8Array(32);
      const iovView = new DataView(iov.buffer);
      const h = addressOf(hdr);
      iovView.setUint32(0, h >>> 0, true);
      iovView.setUint32(4, Math.floor(h / 2 ** 32), true);
      iovView.setUint32(8, VNET_HDR, true);
      iovView.setUint32(24, b.slotSize, true);
      s = { hdr, hdrView: new DataView(hdr.buffer), iov, iovView, slotBase: addressOf(b.buffer) };
      this.#scratch.set(b, s);
    }
    return s;
  }

  writeBatch(from: PacketBatch, start = 0, end: number = from.count): number {
    if (this.#closed) throw new TunError("closed", `${this.name}: device closed`);
    checkWriteBatch(from, start, end, this.mtu, this.offload);
    const c = libc();
    const fd = this.#fd;
    let ok = 0;
    if (!this.#vnet) {
      // writev with one iovec: its length is set with two 32-bit stores, no
      // BigInt per packet as write(2)'s size_t argument would need.
      const iv = this.#txIovView;
      const base = this.#scratchFor(from).slotBase;
      for (let i = start; i < end; i++) {
        const len = from.lengths[i];
        const at = base + i * from.slotSize;
        iv.setUint32(16, at >>> 0, true);
        iv.setUint32(20, Math.floor(at / 2 ** 32), true);
        iv.setUint32(24, len, true);
        if (Number(c.writev(fd, this.#txIov2, 1)) === len) ok++;
        else if (errno() === EBADFD) this.#gone();
      }
    } else {
      const hv = this.#txHdrView;
      const iv = this.#txIovView;
      const base = this.#scratchFor(from).slotBase;
      for (let i = start; i < end; i++) {
        const len = from.lengths[i];
        const fl = from.flags[i];
        hv.setUint8(0, (fl & CSUM_PARTIAL) !== 0 ? 1 : 0);
        hv.setUint8(1, from.gsoKind[i]);
        hv.setUint16(2, from.hdrLen[i], true);
        hv.setUint16(4, from.gsoSize[i], true);
        hv.setUint16(6, from.csumStart[i], true);
        hv.setUint16(8, from.csumOffset[i], true);
        const at = base + i * from.slotSize;
        iv.setUint32(16, at >>> 0, true);
        iv.setUint32(20, Math.floor(at / 2 ** 32), true);
        iv.setUint32(24, len, true);
        if (Number(c.writev(fd, this.#txIov, 2)) === len + VNET_HDR) ok++;
        else if (errno() === EBADFD) this.#gone();
      }
    }
    this.writeDrops += end - start - ok;
    if (this.#closed) throw new TunError("closed", `${this.name}: the interface went away`);
    return ok;
  }

  /**
   * Writes one plain packet from any buffer (no batch copy); false if the
   * kernel refused it. Linux-only convenience for forwarders such as the
   * test link emulator; not part of {@link TunDevice}.
   */
  writePacket(p: Uint8Array<ArrayBuffer>): boolean {
    if (this.#closed) throw new TunError("closed", `${this.name}: device closed`);
    if (this.#vnet) throw new TunError("offload", "writePacket is for plain devices");
    const ok = Number(libc().write(this.#fd, p, BigInt(p.length))) === p.length;
    if (!ok) this.writeDrops++;
    return ok;
  }

  /**
   * The interface was deleted under us (EBADFD): the device is closed from
   * now on; a pending read's `finally` releases the descriptors.
   */
  #gone(): 0 {
    if (!this.#closed) {
      this.#closed = true;
      if (!this.#reading) this.#release();
    }
    return 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#reading) {
      // Wakes the poll; the read closes the descriptors once it returns.
      libc().write(this.#wake, this.#one, 8n);
    } else {
      this.#release();
    }
  }

  #release(): void {
    if (this.#fdClosed) return;
    this.#fdClosed = true;
    const c = libc();
    c.close(this.#fd);
    c.close(this.#wake);
  }
}
