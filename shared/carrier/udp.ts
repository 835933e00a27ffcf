/**
 * Plain UDP as a carrier: the {@link DatagramSocket} (Deno's API or the Linux
 * FFI socket with recvmmsg/sendmmsg) behind the carrier seam. Endpoints are
 * the source addresses, cached per address object (the FFI socket reuses
 * one object per peer), so the hot path allocates nothing per datagram.
 * @module
 */

import { type DatagramSocket, openUdp, type UdpOptions } from "../net/datagram.ts";
import { formatNetAddr, sameNetAddr } from "../net/ip.ts";
import type {
  CarrierDialer,
  CarrierLink,
  CarrierListener,
  Endpoint,
  OnEndpointDatagram,
} from "./carrier.ts";

/** Largest UDP payload (IPv4: 65,535 − 20 − 8). */
const UDP_MAX = 65507;

/** A UDP source address as an {@link Endpoint}. */
export class UdpEndpoint implements Endpoint {
  readonly carrier = "udp";
  readonly key: string;
  constructor(readonly address: Deno.NetAddr) {
    this.key = `udp|${address.hostname}|${address.port}`;
  }
}

const endpoints = new WeakMap<Deno.NetAddr, UdpEndpoint>();

/** The endpoint of UDP address `a` (the same object for the same address object). */
export function udpEndpoint(a: Deno.NetAddr): UdpEndpoint {
  let e = endpoints.get(a);
  if (!e) {
    e = new UdpEndpoint(a);
    endpoints.set(a, e);
  }
  return e;
}

/** The server's UDP listener: one socket, every client. */
export class UdpListener implements CarrierListener {
  readonly kind = "udp";
  readonly overhead = 0;
  readonly reliable = false;
  readonly maxDatagram = UDP_MAX;

  /** Wraps an open socket (it becomes the listener's). */
  constructor(readonly socket: DatagramSocket) {}

  /** Binds a UDP listener on `hostname:port` (see {@link openUdp} for `opts`). */
  static open(hostname: string, port: number, opts: UdpOptions = {}): UdpListener {
    return new UdpListener(openUdp(hostname, port, opts));
  }

  get local(): Deno.NetAddr {
    return this.socket.addr;
  }

  run(onDatagram: OnEndpointDatagram): Promise<void> {
    return this.socket.run((data, from) => onDatagram(data, udpEndpoint(from)));
  }

  send(data: Uint8Array, to: Endpoint): void {
    if (to.carrier !== "udp") return;
    this.socket.send(data, to.address);
  }

  flush(): void {
    this.socket.flush();
  }

  close(): void {
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }
}

/**
 * The client's UDP path: a socket of its own, talking to one server address.
 * What comes from elsewhere goes to {@link UdpLink.tap} when one is set
 * (the STUN mapping monitor shares the socket), else is dropped.
 */
export class UdpLink implements CarrierLink {
  readonly kind = "udp";
  readonly overhead = 0;
  readonly reliable = false;
  readonly maxDatagram = UDP_MAX;
  /** Receives datagrams from other sources than the server (valid during the call). */
  tap: ((data: Uint8Array, from: Deno.NetAddr) => void) | null = null;
  /** Extra counters for the client's status (the mapping monitor sets it). */
  statsSource: (() => Record<string, number | string>) | null = null;
  private closeHooks: (() => void)[] = [];
  private isClosed = false;

  constructor(readonly socket: DatagramSocket, readonly server: Deno.NetAddr) {}

  get local(): string {
    const a = this.socket.addr;
    return `udp ${formatNetAddr(a)}`;
  }

  get localPort(): number {
    return this.socket.addr.port;
  }

  run(onDatagram: (data: Uint8Array) => void): Promise<void> {
    const server = this.server;
    return this.socket.run((data, from) => {
      if (!sameNetAddr(from, server)) {
        this.tap?.(data, from);
        return;
      }
      onDatagram(data);
    });
  }

  send(data: Uint8Array): void {
    this.socket.send(data, this.server);
  }

  flush(): void {
    this.socket.flush();
  }

  /** The counters of {@link statsSource}, if any. */
  stats(): Record<string, number | string> | undefined {
    return this.statsSource?.();
  }

  /** Calls `fn` once when the link closes (at once when it already has). */
  onClose(fn: () => void): void {
    if (this.isClosed) fn();
    else this.closeHooks.push(fn);
  }

  close(): void {
    if (!this.isClosed) {
      this.isClosed = true;
      const hooks = this.closeHooks;
      this.closeHooks = [];
      for (const h of hooks) h();
    }
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }
}

/** Opens a fresh UDP socket per link. */
export class UdpDialer implements CarrierDialer {
  readonly kind = "udp";

  /** `openSocket` opens the socket (default {@link openUdp}); it may throw (EMFILE, …). */
  constructor(
    private readonly openSocket: (hostname: string, port: number) => DatagramSocket = openUdp,
  ) {}

  /** Synchronous form of {@link dial}: UDP needs no round trip to open. */
  openNow(server: Deno.NetAddr): UdpLink {
    const v6 = server.hostname.includes(":");
    return new UdpLink(this.openSocket(v6 ? "::" : "0.0.0.0", 0), server);
  }

  dial(server: Deno.NetAddr): Promise<CarrierLink> {
    try {
      return Promise.resolve(this.openNow(server));
    } catch (e) {
      return Promise.reject(e);
    }
  }
}
