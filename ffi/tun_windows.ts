/**
 * The Windows TUN device: a Wintun adapter (wintun.dll, https://www.wintun.net) through Deno
 * FFI, behind the same {@link TunDevice} interface and conformance suite as `tun_linux.ts`.
 *
 * Wintun moves packets through two shared-memory rings of a session: `WintunReceivePacket`
 * hands out the next packet the system sent (NULL when the ring is empty; then the session's
 * read-wait event is waited on, off the main thread), `WintunAllocateSendPacket` +
 * `WintunSendPacket` put one into the other ring (NULL when it is full: the packet is dropped,
 * as a NIC would). The DLL calls sit behind {@link WintunApi}, which copies packets in and out,
 * so {@link WintunTun} — batching, waiting, validation, close — runs against a fake on any OS
 * (tests/support/fake_wintun.ts); {@link WintunFfi} is the real one.
 * @module
 */

import {
  checkWriteBatch,
  NO_OFFLOAD,
  type PacketBatch,
  readSlotSize,
  type TunDevice,
  TunError,
  type TunOffload,
} from "../shared/tun/device.ts";
import { encodeRegSz } from "../shared/host/registry.ts";

/** What {@link WintunTun} needs from wintun.dll (copying, so no pointers leak out). */
export interface WintunApi {
  /** Copies the next received packet into `out`; its length, or -1 when none is waiting. */
  receive(out: Uint8Array): number;
  /** Queues one packet for the system; false when the ring is full (dropped). */
  send(packet: Uint8Array): boolean;
  /** Resolves true when a packet may be waiting, false after `ms` without one. */
  waitReadable(ms: number): Promise<boolean>;
  /** Ends the session and closes the adapter (idempotent). */
  close(): void;
}

/** How long one wait for packets lasts before the closed flag is looked at again, ms. */
const WAIT_SLICE_MS = 200;

/** A Wintun adapter's session as a {@link TunDevice}. */
export class WintunTun implements TunDevice {
  readonly offload: TunOffload = NO_OFFLOAD;
  private isClosed = false;
  private reading = false;
  /** A packet longer than the reader's slot: kept for the next read with a big enough batch. */
  private readonly scratch = new Uint8Array(65535);

  constructor(readonly name: string, readonly mtu: number, private readonly api: WintunApi) {}

  get closed(): boolean {
    return this.isClosed;
  }

  async readBatch(into: PacketBatch): Promise<number> {
    if (this.reading) throw new TunError("busy", "another read is pending");
    if (into.slotSize < readSlotSize(this)) {
      throw new TunError("slot", `slots of ${into.slotSize} bytes are below the MTU ${this.mtu}`);
    }
    this.reading = true;
    try {
      into.clear();
      while (!this.isClosed) {
        const n = this.drain(into);
        if (n > 0) return n;
        await this.api.waitReadable(WAIT_SLICE_MS);
      }
      into.clear();
      return 0;
    } finally {
      this.reading = false;
    }
  }

  /** Moves what waits in the ring into `into`; packets above the MTU are dropped. */
  private drain(into: PacketBatch): number {
    while (into.count < into.capacity) {
      const n = this.api.receive(this.scratch);
      if (n < 0) break;
      if (n === 0 || n > this.mtu) continue; // not a packet this device carries
      const i = into.count;
      into.slots[i].set(this.scratch.subarray(0, n));
      into.lengths[i] = n;
      into.flags[i] = 0;
      into.gsoKind[i] = 0;
      into.gsoSize[i] = 0;
      into.count = i + 1;
    }
    return into.count;
  }

  writeBatch(from: PacketBatch, start = 0, end = from.count): number {
    if (this.isClosed) throw new TunError("closed", "the device is closed");
    checkWriteBatch(from, start, end, this.mtu, this.offload);
    let sent = 0;
    for (let i = start; i < end; i++) {
      if (this.api.send(from.slots[i].subarray(0, from.lengths[i]))) sent++;
    }
    return sent;
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.api.close();
  }
}

// ---------------------------------------------------------------- wintun.dll

const WINTUN = {
  WintunCreateAdapter: { parameters: ["buffer", "buffer", "pointer"], result: "pointer" },
  WintunOpenAdapter: { parameters: ["buffer"], result: "pointer" },
  WintunCloseAdapter: { parameters: ["pointer"], result: "void" },
  WintunGetAdapterLUID: { parameters: ["pointer", "buffer"], result: "void" },
  WintunStartSession: { parameters: ["pointer", "u32"], result: "pointer" },
  WintunEndSession: { parameters: ["pointer"], result: "void" },
  WintunGetReadWaitEvent: { parameters: ["pointer"], result: "pointer" },
  WintunReceivePacket: { parameters: ["pointer", "buffer"], result: "pointer" },
  WintunReleaseReceivePacket: { parameters: ["pointer", "pointer"], result: "void" },
  WintunAllocateSendPacket: { parameters: ["pointer", "u32"], result: "pointer" },
  WintunSendPacket: { parameters: ["pointer", "pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

const KERNEL32 = {
  WaitForSingleObject: { parameters: ["pointer", "u32"], result: "u32", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

/** `WAIT_OBJECT_0`. */
const WAIT_OBJECT_0 = 0;
/** Ring size of a session, bytes (a power of two in 128 KiB‥64 MiB). */
export const WINTUN_RING_CAPACITY = 0x400000;

/** Options of {@link WintunFfi.open}. */
export interface WintunOpenOptions {
  /** The adapter's name (what `netsh` and the route commands name). */
  name: string;
  /** The tunnel type shown by Windows ("ostp"). */
  tunnelType?: string;
  /** Path of wintun.dll (default: beside the executable, then the DLL search path). */
  dll?: string;
}

/** wintun.dll's adapter and session. */
export class WintunFfi implements WintunApi {
  private closed = false;
  private readonly size = new Uint8Array(4);

  private constructor(
    private readonly lib: Deno.DynamicLibrary<typeof WINTUN>,
    private readonly k32: Deno.DynamicLibrary<typeof KERNEL32>,
    private readonly adapter: Deno.PointerObject,
    private readonly session: Deno.PointerObject,
    private readonly event: Deno.PointerValue,
    /** The adapter's LUID (for the IP Helper route and DNS calls). */
    readonly luid: bigint,
  ) {}

  /** Creates (or opens) the adapter and starts a session. Windows only; needs Administrator. */
  static open(o: WintunOpenOptions): WintunFfi {
    if (Deno.build.os !== "windows") throw new TunError("os", "Wintun is a Windows driver");
    let lib: Deno.DynamicLibrary<typeof WINTUN>;
    try {
      lib = Deno.dlopen(o.dll ?? "wintun.dll", WINTUN);
    } catch (e) {
      throw new TunError(
        "os",
        `cannot load wintun.dll (${(e as Error).message}): put it beside the executable ` +
          "(https://www.wintun.net)",
      );
    }
    const name = encodeRegSz(o.name) as Uint8Array<ArrayBuffer>;
    const type = encodeRegSz(o.tunnelType ?? "ostp") as Uint8Array<ArrayBuffer>;
    const adapter = lib.symbols.WintunOpenAdapter(name) ??
      lib.symbols.WintunCreateAdapter(name, type, null);
    if (!adapter) {
      lib.close();
      throw new TunError("permission", "WintunCreateAdapter failed: run as Administrator");
    }
    const session = lib.symbols.WintunStartSession(adapter, WINTUN_RING_CAPACITY);
    if (!session) {
      lib.symbols.WintunCloseAdapter(adapter);
      lib.close();
      throw new TunError("os", "WintunStartSession failed");
    }
    const luidBuf = new Uint8Array(8);
    lib.symbols.WintunGetAdapterLUID(adapter, luidBuf);
    const luid = new DataView(luidBuf.buffer).getBigUint64(0, true);
    const event = lib.symbols.WintunGetReadWaitEvent(session);
    const k32 = Deno.dlopen("kernel32.dll", KERNEL32);
    return new WintunFfi(lib, k32, adapter, session, event, luid);
  }

  receive(out: Uint8Array): number {
    if (this.closed) return -1;
    const p = this.lib.symbols.WintunReceivePacket(this.session, this.size);
    if (!p) return -1; // ERROR_NO_MORE_ITEMS (or the adapter going away: the wait ends it)
    try {
      const n = new DataView(this.size.buffer).getUint32(0, true);
      if (n > out.length) return 0;
      new Deno.UnsafePointerView(p).copyInto(out.subarray(0, n));
      return n;
    } finally {
      this.lib.symbols.WintunReleaseReceivePacket(this.session, p);
    }
  }

  send(packet: Uint8Array): boolean {
    if (this.closed) return false;
    const p = this.lib.symbols.WintunAllocateSendPacket(this.session, packet.length);
    if (!p) return false; // ERROR_BUFFER_OVERFLOW: the ring is full
    new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, packet.length)).set(packet);
    this.lib.symbols.WintunSendPacket(this.session, p);
    return true;
  }

  async waitReadable(ms: number): Promise<boolean> {
    if (this.closed) return false;
    return (await this.k32.symbols.WaitForSingleObject(this.event, ms)) === WAIT_OBJECT_0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.lib.symbols.WintunEndSession(this.session);
    this.lib.symbols.WintunCloseAdapter(this.adapter);
    // The libraries stay loaded: a wait may still be running on another thread.
  }
}

/** Opens a Wintun adapter as a {@link TunDevice}. */
export function openWintun(o: WintunOpenOptions & { mtu: number }): WintunTun {
  return new WintunTun(o.name, o.mtu, WintunFfi.open(o));
}
