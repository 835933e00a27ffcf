/**
 * The datagram socket both daemons run on, behind one small interface so the
 * daemons never know which implementation carries them: Deno's own UDP API
 * (one promise per datagram, portable) or the Linux FFI socket in
 * `ffi/udp_linux.ts` (batches with recvmmsg/sendmmsg and large kernel
 * buffers). {@link openUdp} picks the best available.
 * @module
 */

import { bypass } from "./bypass.ts";

/** A bound UDP socket that receives and sends datagrams in batches. */
export interface DatagramSocket {
  /** The bound local address. */
  readonly addr: Deno.NetAddr;
  /** Which implementation this is ("deno" or "linux-ffi"). */
  readonly kind: string;
  /** The OS descriptor, when the implementation has one (FFI). */
  readonly fd?: number;
  /**
   * Receives until the socket closes, calling `onDatagram` for each datagram.
   * `data` is only valid during the call; `from` objects may be reused for
   * the same address.
   */
  run(onDatagram: (data: Uint8Array, from: Deno.NetAddr) => void): Promise<void>;
  /** Queues a datagram (copied) for sending; queued datagrams leave at the end of the task. */
  send(data: Uint8Array, to: Deno.NetAddr): void;
  /** Sends everything queued now. */
  flush(): void;
  /** Closes the socket; `run` resolves soon after. */
  close(): void;
}

/** Options of {@link openUdp}. */
export interface UdpOptions {
  /** Kernel receive buffer to ask for, bytes (FFI only). */
  receiveBuffer?: number;
  /** Kernel send buffer to ask for, bytes (FFI only). */
  sendBuffer?: number;
  /** Force an implementation; default: `OSTP_UDP` env, else FFI on Linux, else Deno. */
  impl?: "deno" | "ffi";
  /**
   * Firewall mark (`SO_MARK`) of the socket's packets; default: the TUN
   * mode's bypass mark (`bypass.ts`) when one is set. FFI only.
   */
  mark?: number;
  /**
   * Share the port with other sockets that ask for it too (`SO_REUSEPORT`,
   * set before bind): the kernel spreads datagrams over them by a hash of the
   * 4-tuple. FFI only (Deno's `reuseAddress` gives `SO_REUSEADDR` alone on
   * Linux, where the last socket bound then takes every datagram): with Deno's
   * API this throws. See {@link reusePortAvailable}.
   */
  reusePort?: boolean;
}

/** Deno's UDP API: portable, one promise per datagram. */
export class DenoUdpSocket implements DatagramSocket {
  readonly kind = "deno";
  private readonly conn: Deno.DatagramConn;
  private closed = false;

  constructor(hostname: string, port: number) {
    this.conn = Deno.listenDatagram({ transport: "udp", hostname, port });
  }

  get addr(): Deno.NetAddr {
    return this.conn.addr as Deno.NetAddr;
  }

  async run(onDatagram: (data: Uint8Array, from: Deno.NetAddr) => void): Promise<void> {
    const buf = new Uint8Array(65536);
    while (!this.closed) {
      let data: Uint8Array;
      let from: Deno.Addr;
      try {
        [data, from] = await this.conn.receive(buf);
      } catch (e) {
        if (this.closed || e instanceof Deno.errors.BadResource) return;
        continue;
      }
      onDatagram(data, from as Deno.NetAddr);
    }
  }

  send(data: Uint8Array, to: Deno.NetAddr): void {
    if (this.closed) return;
    this.conn.send(data.slice(), to).catch(() => {});
  }

  flush(): void {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

type Factory = (hostname: string, port: number, opts: UdpOptions) => DatagramSocket;
let ffiFactory: Factory | null | undefined;

/** Registers the FFI implementation (done by `ffi/udp_linux.ts` when imported). */
export function registerFfiUdp(f: Factory): void {
  ffiFactory = f;
}

function ffiGranted(): boolean {
  try {
    return Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  } catch {
    return false;
  }
}

/** The implementation {@link openUdp} would pick without `impl`: the `OSTP_UDP` env, else none. */
function envImpl(): "deno" | "ffi" | undefined {
  try {
    const env = Deno.env.get("OSTP_UDP");
    if (env === "deno" || env === "ffi") return env;
  } catch {
    // no env permission: default
  }
  return undefined;
}

/**
 * True when {@link openUdp} can open sockets with `reusePort` here: the Linux
 * FFI socket is registered, allowed (`--allow-ffi`) and not overridden by
 * `OSTP_UDP=deno`.
 */
export function reusePortAvailable(): boolean {
  return Deno.build.os === "linux" && ffiFactory != null && envImpl() !== "deno" && ffiGranted();
}

/** Opens a UDP socket with the best available implementation (never prompts for permission). */
export function openUdp(hostname: string, port: number, opts: UdpOptions = {}): DatagramSocket {
  const mark = opts.mark ?? bypass()?.mark;
  if (mark) opts = { ...opts, mark };
  const impl = opts.impl ?? envImpl();
  if (impl !== "deno" && ffiFactory && (impl === "ffi" || ffiGranted())) {
    try {
      return ffiFactory(hostname, port, opts);
    } catch (e) {
      if (impl === "ffi" || opts.mark || opts.reusePort) throw e;
      // FFI unavailable (no permission, not Linux): fall back.
    }
  }
  if (opts.mark) throw new Error("marking UDP sockets (TUN mode) needs the Linux FFI UDP socket");
  if (opts.reusePort) throw new Error("SO_REUSEPORT needs the Linux FFI UDP socket");
  return new DenoUdpSocket(hostname, port);
}
