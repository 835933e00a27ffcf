/**
 * Linux TUN devices through `/dev/net/tun` and `ioctl(TUNSETIFF)` (FFI):
 * layer-3 packets without a packet-information header (IFF_TUN | IFF_NO_PI).
 * @module
 */

import { cString, errno, libc, O_CLOEXEC, O_RDWR, OsError } from "./libc.ts";

const TUNSETIFF = 0x400454ca;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
const IFNAMSIZ = 16;

/** An open TUN device; packets are whole IP datagrams. */
export class LinuxTun {
  private closed = false;

  private constructor(readonly name: string, private readonly fd: number) {}

  /** Creates (or attaches to) TUN device `name`; requires CAP_NET_ADMIN. */
  static open(name: string): LinuxTun {
    const nameBytes = new TextEncoder().encode(name);
    if (nameBytes.length === 0 || nameBytes.length >= IFNAMSIZ) {
      throw new RangeError(`interface name must be 1..${IFNAMSIZ - 1} bytes`);
    }
    const c = libc();
    const fd = c.open(cString("/dev/net/tun"), O_RDWR | O_CLOEXEC);
    if (fd < 0) throw new OsError("open /dev/net/tun", errno());
    const ifr = new Uint8Array(40);
    ifr.set(nameBytes);
    new DataView(ifr.buffer).setUint16(IFNAMSIZ, IFF_TUN | IFF_NO_PI, true);
    if (c.ioctl(fd, BigInt(TUNSETIFF), ifr) < 0) {
      const e = errno();
      c.close(fd);
      throw new OsError("ioctl TUNSETIFF", e);
    }
    const actual = new TextDecoder().decode(ifr.subarray(0, ifr.indexOf(0)));
    return new LinuxTun(actual, fd);
  }

  /** Reads one packet into `buf` (waits on a worker thread); returns its length. */
  async read(buf: Uint8Array<ArrayBuffer>): Promise<number> {
    const n = Number(await libc().read_blocking(this.fd, buf, BigInt(buf.length)));
    if (n < 0) throw new OsError("read tun", errno());
    return n;
  }

  /** Writes one packet; returns false if the kernel refused it. */
  write(pkt: Uint8Array<ArrayBuffer>): boolean {
    return Number(libc().write(this.fd, pkt, BigInt(pkt.length))) === pkt.length;
  }

  /** Closes the device (the interface disappears unless persistent). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc().close(this.fd);
  }
}
