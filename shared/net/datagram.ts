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

/** Opens a UDP socket with the best available implementation (never prompts for permission). */
export function openUdp(hostname: string, port: number, opts: UdpOptions = {}): DatagramSocket {
  const mark = opts.mark ?? bypass()?.mark;
  if (mark) opts = { ...opts, mark };
  let impl = opts.impl;
  if (!impl) {
    try {
      const env = Deno.env.get("OSTP_UDP");
      if (env === "deno" || env === "ffi") impl = env;
    } catch {
      // no env permission: default
    }
  }
  if (impl !== "deno" && ffiFactory && (impl === "ffi" || ffiGranted())) {
    try {
      return ffiFactory(hostname, port, opts);
    } catch (e) {
      if (impl === "ffi" || opts.mark) throw e;
      // FFI unavailable (no permission, not Linux): fall back.
    }
  }
  if (opts.mark) throw new Error("marking UDP sockets (TUN mode) needs the Linux FFI UDP socket");
  return new DenoUdpSocket(hostname, port);
}
