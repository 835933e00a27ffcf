/**
 * Test support for SOCKS5 UDP ASSOCIATE (RFC 1928 §7) on loopback: the
 * association handshake, the UDP request header, a receiving socket with a
 * queue, and a UDP echo.
 * @module
 */

import { assert, assertEquals } from "./assert.ts";

/** A UDP socket on 127.0.0.1 whose received datagrams queue up for {@link Receiver.next}. */
export class Receiver {
  readonly sock: Deno.DatagramConn;
  private queue: Uint8Array[] = [];
  private waiter: (() => void) | null = null;
  private loop: Promise<void>;

  constructor() {
    const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    this.sock = sock;
    this.loop = (async () => {
      try {
        for (;;) {
          const [d] = await sock.receive();
          this.queue.push(d);
          this.waiter?.();
        }
      } catch { /* closed */ }
    })();
  }

  /** Sends `data` to 127.0.0.1:`port`. */
  send(data: Uint8Array, port: number): Promise<number> {
    return this.sock.send(data, { transport: "udp", hostname: "127.0.0.1", port });
  }

  /** Next datagram, or null after `ms`. */
  async next(ms: number): Promise<Uint8Array | null> {
    const end = performance.now() + ms;
    while (this.queue.length === 0) {
      const left = end - performance.now();
      if (left <= 0) return null;
      let t: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.waiter = r;
        t = setTimeout(r, left);
      });
      clearTimeout(t);
      this.waiter = null;
    }
    return this.queue.shift()!;
  }

  /** Forgets what was received. */
  drain(): void {
    this.queue.length = 0;
  }

  /** Closes the socket. */
  async close(): Promise<void> {
    try {
      this.sock.close();
    } catch { /* already closed */ }
    await this.loop;
  }
}

/** SOCKS5 UDP request header for 127.0.0.1:`port` followed by `data`. */
export function socksUdp(port: number, data: Uint8Array, frag = 0): Uint8Array {
  const out = new Uint8Array(10 + data.length);
  out.set([0, 0, frag, 1, 127, 0, 0, 1, port >> 8, port & 0xff]);
  out.set(data, 10);
  return out;
}

async function readN(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error(`control connection closed after ${got} of ${n} bytes`);
    got += r;
  }
  return out;
}

/** SOCKS5 handshake + UDP ASSOCIATE; returns the control connection and the relay port. */
export async function associate(
  proxyPort: number,
): Promise<{ ctl: Deno.Conn; relayPort: number }> {
  const ctl = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  await ctl.write(Uint8Array.of(5, 1, 0));
  assertEquals([...(await readN(ctl, 2))], [5, 0]);
  await ctl.write(Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, 0, 0));
  const rep = await readN(ctl, 10);
  assertEquals([rep[0], rep[1], rep[3]], [5, 0, 1], `reply ${[...rep]}`);
  assertEquals([...rep.subarray(4, 8)], [127, 0, 0, 1]);
  const relayPort = (rep[8] << 8) | rep[9];
  assert(relayPort > 0);
  return { ctl, relayPort };
}

/**
 * A UDP echo on 127.0.0.1: every datagram is sent back to its source, and its text recorded in
 * `got` (what reached the target).
 */
export function startUdpEcho(): { port: number; got: string[]; close(): Promise<void> } {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const got: string[] = [];
  const loop = (async () => {
    try {
      for (;;) {
        const [data, from] = await sock.receive();
        got.push(new TextDecoder().decode(data));
        await sock.send(data, from);
      }
    } catch { /* closed */ }
  })();
  return {
    port: (sock.addr as Deno.NetAddr).port,
    got,
    async close() {
      try {
        sock.close();
      } catch { /* already closed */ }
      await loop;
    },
  };
}
