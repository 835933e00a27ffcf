/**
 * A UDP forwarder that sits between a client and a server on loopback and
 * records every datagram, so tests can replay or mutate real session traffic.
 * @module
 */

/** Forwards client ⇄ server and keeps copies of what passed. */
export class UdpTap {
  /** Datagrams client → server, in order. */
  readonly upstream: Uint8Array[] = [];
  /** Arrival times (performance.now()) of `upstream`, parallel to it. */
  readonly upstreamAt: number[] = [];
  /** Datagrams server → client. */
  readonly downstream: Uint8Array[] = [];
  private readonly front: Deno.DatagramConn;
  private readonly back: Deno.DatagramConn;
  private clientAddr: Deno.NetAddr | null = null;
  private readonly loops: Promise<void>[];
  /** Keep at most this many copies per direction. */
  constructor(private readonly serverPort: number, private readonly keep = 20000) {
    this.front = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    this.back = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    this.loops = [this.forward(), this.backward()];
  }

  /** Port the client should use as its server. */
  get port(): number {
    return (this.front.addr as Deno.NetAddr).port;
  }

  /** Port the server sees the client's packets come from. */
  get backPort(): number {
    return (this.back.addr as Deno.NetAddr).port;
  }

  private async forward(): Promise<void> {
    const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: this.serverPort };
    try {
      for (;;) {
        const [d, from] = await this.front.receive();
        this.clientAddr = from as Deno.NetAddr;
        if (this.upstream.length < this.keep) {
          this.upstream.push(d);
          this.upstreamAt.push(performance.now());
        }
        await this.back.send(d, to);
      }
    } catch {
      // closed
    }
  }

  private async backward(): Promise<void> {
    try {
      for (;;) {
        const [d] = await this.back.receive();
        if (this.downstream.length < this.keep) this.downstream.push(d);
        if (this.clientAddr) await this.front.send(d, this.clientAddr);
      }
    } catch {
      // closed
    }
  }

  /** Stops forwarding. */
  async close(): Promise<void> {
    this.front.close();
    this.back.close();
    await Promise.allSettled(this.loops);
  }
}
