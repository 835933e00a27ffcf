/**
 * The TUN device seam: what the userspace TCP/IP stack reads IP packets from
 * and writes them to, whatever moves them (Linux `/dev/net/tun` in
 * `ffi/tun_linux.ts`, Wintun later, the in-memory `tunPair()` of
 * `shared/tun/pair.ts`).
 *
 * Packets are whole IP datagrams, IPv4 or IPv6, with no packet-information
 * header. I/O is batched into caller-owned {@link PacketBatch} storage: one
 * promise per batch read, none per packet, and no allocation per packet on
 * either side. Failures are one type, {@link TunError}, with a `kind`.
 * @module
 */

/** The largest IP packet a slot ever needs (an IPv4 total length, or a GSO super-segment). */
export const MAX_PACKET = 65535;

/** {@link PacketBatch.gsoKind}: a plain packet, not to be segmented. */
export const GSO_NONE = 0;
/** {@link PacketBatch.gsoKind}: an IPv4 TCP super-segment (TSO). */
export const GSO_TCP4 = 1;
/** {@link PacketBatch.gsoKind}: an IPv6 TCP super-segment (TSO). */
export const GSO_TCP6 = 4;
/** {@link PacketBatch.gsoKind}: a UDP super-segment cut into datagrams (USO, IPv4 or IPv6). */
export const GSO_UDP_L4 = 5;

/**
 * {@link PacketBatch.flags} bit: the transport checksum field holds only the
 * pseudo-header sum; the bytes from `csumStart` on must still be summed into
 * the field at `csumStart + csumOffset` (read: the sender left it to us, so
 * do not verify it; write: the device computes it).
 */
export const CSUM_PARTIAL = 1;
/** {@link PacketBatch.flags} bit (read side): the checksum was already verified. */
export const CSUM_VALID = 2;

/** What a device can do beyond plain packets (all false for plain devices). */
export interface TunOffload {
  /**
   * Reads may return TCP super-segments up to {@link MAX_PACKET} bytes
   * (`gsoKind` TCP4/TCP6 and `gsoSize` = MSS), and writes may pass them; the
   * device (kernel) cuts them into MTU-sized segments.
   */
  readonly tso: boolean;
  /** Same for UDP (`gsoKind` = {@link GSO_UDP_L4}), when the kernel supports USO. */
  readonly uso: boolean;
  /** Checksums may be left partial ({@link CSUM_PARTIAL}) in both directions. */
  readonly checksum: boolean;
}

/** The offload set of a plain device. */
export const NO_OFFLOAD: TunOffload = Object.freeze({ tso: false, uso: false, checksum: false });

/**
 * Caller-owned storage for up to `capacity` packets of up to `slotSize` bytes
 * each, and their per-packet offload metadata (struct of arrays).
 *
 * Packet `i` (for `i < count`) is `slots[i].subarray(0, lengths[i])`; hot
 * loops use `slots[i]` with `lengths[i]` directly (both made once, at
 * construction), {@link PacketBatch.packet} makes a view for convenience.
 * A reader fills slots 0‥count-1 and sets `count`; a writer fills them (with
 * {@link PacketBatch.push} or by writing into `slots[i]` and setting
 * `lengths[i]`) and passes the batch with a range.
 */
export class PacketBatch {
  /** Maximum number of packets. */
  readonly capacity: number;
  /** Bytes per slot: the largest packet this batch holds. */
  readonly slotSize: number;
  /** All slots, back to back (slot `i` starts at `i * slotSize`). */
  readonly buffer: Uint8Array<ArrayBuffer>;
  /** Full-size view of each slot, made once. */
  readonly slots: readonly Uint8Array<ArrayBuffer>[];
  /** Length of the packet in each slot. */
  readonly lengths: Uint32Array;
  /** Per packet: {@link CSUM_PARTIAL} and {@link CSUM_VALID} bits (0 for plain packets). */
  readonly flags: Uint8Array;
  /** Per packet: a `GSO_*` kind ({@link GSO_NONE} for a plain packet). */
  readonly gsoKind: Uint8Array;
  /** Per packet: payload bytes per segment of a super-segment (0 when {@link GSO_NONE}). */
  readonly gsoSize: Uint16Array;
  /** Per packet: length of the IP + transport headers of a super-segment (a hint). */
  readonly hdrLen: Uint16Array;
  /** Per packet: where checksumming starts, for {@link CSUM_PARTIAL}. */
  readonly csumStart: Uint16Array;
  /** Per packet: offset of the checksum field from `csumStart`, for {@link CSUM_PARTIAL}. */
  readonly csumOffset: Uint16Array;
  /** Number of packets held (slots 0‥count-1). */
  count = 0;

  /**
   * @param capacity packets per batch (1‥4096).
   * @param slotSize bytes per slot: at least the device's MTU, or {@link MAX_PACKET}
   *   for a device with TSO/USO.
   */
  constructor(capacity: number, slotSize: number = MAX_PACKET) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 4096) {
      throw new RangeError("PacketBatch capacity must be an integer in 1..4096");
    }
    if (!Number.isInteger(slotSize) || slotSize < 20 || slotSize > MAX_PACKET) {
      throw new RangeError(`PacketBatch slotSize must be an integer in 20..${MAX_PACKET}`);
    }
    this.capacity = capacity;
    this.slotSize = slotSize;
    this.buffer = new Uint8Array(capacity * slotSize);
    const slots: Uint8Array<ArrayBuffer>[] = [];
    for (let i = 0; i < capacity; i++) {
      slots.push(this.buffer.subarray(i * slotSize, (i + 1) * slotSize));
    }
    this.slots = slots;
    this.lengths = new Uint32Array(capacity);
    this.flags = new Uint8Array(capacity);
    this.gsoKind = new Uint8Array(capacity);
    this.gsoSize = new Uint16Array(capacity);
    this.hdrLen = new Uint16Array(capacity);
    this.csumStart = new Uint16Array(capacity);
    this.csumOffset = new Uint16Array(capacity);
  }

  /** A view of packet `i` (allocates the view object; hot paths use `slots` and `lengths`). */
  packet(i: number): Uint8Array<ArrayBuffer> {
    return this.slots[i].subarray(0, this.lengths[i]);
  }

  /**
   * Copies `p` into the next slot as a plain packet; false (nothing changed)
   * when the batch is full or `p` is longer than a slot.
   */
  push(p: Uint8Array): boolean {
    const i = this.count;
    if (i === this.capacity || p.length > this.slotSize) return false;
    this.slots[i].set(p);
    this.lengths[i] = p.length;
    this.flags[i] = 0;
    this.gsoKind[i] = GSO_NONE;
    this.gsoSize[i] = 0;
    this.hdrLen[i] = 0;
    this.csumStart[i] = 0;
    this.csumOffset[i] = 0;
    this.count = i + 1;
    return true;
  }

  /** Empties the batch (`count = 0`); slot contents are left as they are. */
  clear(): void {
    this.count = 0;
  }
}

/** Why a TUN operation failed. */
export type TunErrorKind =
  /** The device was closed (by this side; or the interface disappeared). */
  | "closed"
  /** A packet longer than the MTU (and not a super-segment the device accepts). */
  | "oversize"
  /** Not an IP packet: empty, or a version nibble other than 4 or 6. */
  | "malformed"
  /** Offload metadata on a device that did not enable it. */
  | "offload"
  /** A second `readBatch` while one is pending. */
  | "busy"
  /** The batch's slots are smaller than the largest packet the device may return. */
  | "slot"
  /** Opening or configuring the device needs root or CAP_NET_ADMIN. */
  | "permission"
  /** Any other operating-system failure (the message names the call). */
  | "os";

/** The one failure type of every {@link TunDevice}. */
export class TunError extends Error {
  /** What went wrong. */
  readonly kind: TunErrorKind;
  /** errno (or Win32 error) for `kind` "os" / "permission", else 0. */
  readonly code: number;
  constructor(kind: TunErrorKind, message: string, code = 0) {
    super(message);
    this.name = "TunError";
    this.kind = kind;
    this.code = code;
  }
}

/**
 * A layer-3 packet device. One reader at a time; writes are synchronous (a
 * TUN write hands the packet to the OS, or drops it when its queue is full,
 * as a NIC would).
 */
export interface TunDevice {
  /** Interface name as the OS knows it (for the pair, the name it was given). */
  readonly name: string;
  /** Largest plain packet, in bytes, either way. */
  readonly mtu: number;
  /** Offloads enabled on this device ({@link NO_OFFLOAD} for a plain one). */
  readonly offload: TunOffload;
  /** True once {@link TunDevice.close} was called (or the device went away). */
  readonly closed: boolean;

  /**
   * Waits until at least one packet is available, then moves as many as are
   * available without waiting into `into` (from slot 0, up to its capacity),
   * setting `into.count`, the lengths and the offload metadata. Resolves to
   * that count (≥ 1), or to 0 once the device is closed — a pending read
   * resolves 0 promptly when {@link TunDevice.close} is called.
   * Packet order is kept.
   * @throws {TunError} "busy" if another read is pending, "slot" if
   *   `into.slotSize` is below {@link TunDevice.mtu} (or {@link MAX_PACKET}
   *   with TSO/USO on), "os" for an unexpected OS failure.
   */
  readBatch(into: PacketBatch): Promise<number>;

  /**
   * Writes packets `start‥end-1` of `from` (default: all `from.count`), in
   * order. Every packet is checked first; if any is invalid nothing is
   * written. Returns how many the OS accepted; the rest were dropped for lack
   * of queue space (no error: IP is allowed to lose packets).
   * @throws {TunError} "closed" after {@link TunDevice.close}; "oversize" for
   *   a packet longer than {@link TunDevice.mtu} without GSO metadata;
   *   "malformed" for an empty or non-IPv4/IPv6 packet; "offload" for
   *   GSO or partial-checksum metadata the device did not enable.
   */
  writeBatch(from: PacketBatch, start?: number, end?: number): number;

  /**
   * Closes the device: a pending {@link TunDevice.readBatch} resolves 0,
   * later reads resolve 0, later writes throw {@link TunError} "closed". The
   * OS interface goes away (unless it was made persistent). Idempotent.
   */
  close(): void;
}

/** The slot size a batch needs to read from `dev`: its MTU, or {@link MAX_PACKET} with TSO/USO on. */
export function readSlotSize(dev: TunDevice): number {
  return dev.offload.tso || dev.offload.uso ? MAX_PACKET : dev.mtu;
}

/**
 * Checks packets `start‥end-1` of `b` for {@link TunDevice.writeBatch}:
 * throws the {@link TunError} the interface specifies for the first invalid
 * one. Shared by the implementations so they reject the same way.
 */
export function checkWriteBatch(
  b: PacketBatch,
  start: number,
  end: number,
  mtu: number,
  offload: TunOffload,
): void {
  if (start < 0 || end > b.count || start > end) {
    throw new RangeError(`writeBatch range ${start}..${end} outside 0..${b.count}`);
  }
  const lengths = b.lengths;
  const slots = b.slots;
  for (let i = start; i < end; i++) {
    const n = lengths[i];
    if (n === 0 || n > b.slotSize) {
      throw new TunError("malformed", `packet ${i}: length ${n}`);
    }
    const v = slots[i][0] >> 4;
    if (v !== 4 && v !== 6) throw new TunError("malformed", `packet ${i}: IP version ${v}`);
    const kind = b.gsoKind[i];
    if (kind !== GSO_NONE) {
      const ok = kind === GSO_UDP_L4
        ? offload.uso
        : (kind === GSO_TCP4 || kind === GSO_TCP6)
        ? offload.tso
        : false;
      if (!ok || b.gsoSize[i] === 0) {
        throw new TunError("offload", `packet ${i}: GSO kind ${kind} not enabled on this device`);
      }
    } else if (n > mtu) {
      throw new TunError("oversize", `packet ${i}: ${n} bytes exceeds MTU ${mtu}`);
    }
    if ((b.flags[i] & CSUM_PARTIAL) !== 0 && !offload.checksum) {
      throw new TunError("offload", `packet ${i}: partial checksum not enabled on this device`);
    }
  }
}
