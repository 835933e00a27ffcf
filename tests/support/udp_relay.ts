/**
 * A UDP relay on loopback between clients and a server: each client address
 * gets its own upstream socket (so the server sees distinct addresses, as it
 * would without the relay), the server port can change (a server restarted
 * elsewhere), and the relay can drop everything in both directions (a silent
 * outage: a dead server or a dead path).
 * @module
 */

/** Relays datagrams client ⇄ server; see the module doc. */
export class UdpRelay {
  /** Server port datagrams go to; change it to point at another server. */
  target: number;
  /** While true, every datagram in either direction is dropped. */
  dropping = false;
  /** Datagrams dropped while {@link dropping}. */
  dropped = 0;
  /** Datagrams the server sent (relayed or dropped), per client port. */
  readonly fromServer = new Map<number, number>();
  private readonly front: Deno.DatagramConn;
  private readonly backs = new Map<string, Deno.DatagramConn>();
  private readonly loops: Promise<void>[] = [];

  /** Listens on 127.0.0.1 (a free port) and relays to `target`. */
  constructor(target: number) {
    this.target = target;
    this.front = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    this.loops.push(this.forward());
  }

  /** Port the clients should use as their server. */
  get port(): number {
    return (this.front.addr as Deno.NetAddr).port;
  }

  private async forward(): Promise<void> {
    try {
      for (;;) {
        const [d, from] = await this.front.receive();
        if (this.dropping) {
          this.dropped++;
          continue;
        }
        const client = from as Deno.NetAddr;
        const k = `${client.hostname}:${client.port}`;
        let back = this.backs.get(k);
        if (!back) {
          back = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
          this.backs.set(k, back);
          this.loops.push(this.backward(back, client));
        }
        const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: this.target };
        await back.send(d, to).catch(() => 0);
      }
    } catch {
      // closed
    }
  }

  private async backward(back: Deno.DatagramConn, client: Deno.NetAddr): Promise<void> {
    try {
      for (;;) {
        const [d] = await back.receive();
        this.fromServer.set(client.port, (this.fromServer.get(client.port) ?? 0) + 1);
        if (this.dropping) {
          this.dropped++;
          continue;
        }
        await this.front.send(d, client).catch(() => 0);
      }
    } catch {
      // closed
    }
  }

  /** Closes every socket and waits for the loops to end. */
  async close(): Promise<void> {
    for (const c of [this.front, ...this.backs.values()]) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
    await Promise.allSettled(this.loops);
  }
}
