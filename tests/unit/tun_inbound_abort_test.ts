/**
 * The TUN inbound ends a flow's outbound the way the application ended its connection: a reset
 * (here after the application's half-close, as a killed `curl` that had read everything does:
 * FIN, then RST for the data that keeps coming) resets the outbound stream, so the target stops
 * at once; a plain close after the half-close would keep draining — and discarding — an endless
 * download through the tunnel. A connection that ends cleanly closes its outbound cleanly.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { TcpPeer } from "../support/tcp_peer.ts";
import { TunInbound } from "../../client/inbound/tun.ts";
import { NameMap } from "../../client/dns/name_map.ts";
import type { Outbound } from "../../client/outbound/outbound.ts";
import type { Duplex } from "../../shared/duplex.ts";
import { PacketBatch } from "../../shared/tun/device.ts";
import { tunPair } from "../../shared/tun/pair.ts";
import { emitIpHeader } from "../../shared/netstack/wire/packet.ts";
import { emitTcp, TcpFlags } from "../../shared/netstack/wire/tcp.ts";
import { IpProtocol } from "../../shared/netstack/wire/ip_protocol.ts";

const APP = new Uint8Array([172, 19, 0, 1]);
const DST = new Uint8Array([10, 202, 0, 2]);

/** An outbound stream: `endless` sends forever, otherwise `total` bytes then EOF. */
class FakeStream implements Duplex {
  calls: string[] = [];
  sent = 0;
  #ended = false;
  constructor(private readonly total = Infinity) {}
  async read(p: Uint8Array): Promise<number | null> {
    await new Promise((r) => setTimeout(r, 1));
    if (this.#ended) return null;
    const n = Math.min(p.length, this.total - this.sent);
    if (n === 0) return null;
    p.fill(0x61, 0, n);
    this.sent += n;
    return n;
  }
  write(p: Uint8Array): Promise<number> {
    return Promise.resolve(p.length);
  }
  closeWrite(): Promise<void> {
    this.calls.push("closeWrite");
    return Promise.resolve();
  }
  close(): void {
    this.calls.push("close");
    this.#ended = true;
  }
  reset(): void {
    this.calls.push("reset");
    this.#ended = true;
  }
}

/** A TUN inbound on one end of a pair, a {@link TcpPeer} playing the application on the other. */
function harness(stream: FakeStream) {
  const [dev, app] = tunPair({ mtu: 1500 });
  const outbound: Outbound = {
    name: "tunnel",
    dial: () => Promise.resolve(stream),
    openUdp: () => Promise.reject(new Error("no UDP here")),
  };
  const inbound = new TunInbound({
    device: dev,
    outbound,
    names: new NameMap(),
    dns: null,
    dnsAddresses: [],
    hijackDns: false,
  });
  const running = inbound.run();
  const peer = new TcpPeer({ src: APP, srcPort: 40000, dst: DST, dstPort: 80 }, false);
  const rx = new PacketBatch(64, 1500);
  const tx = new PacketBatch(64, 1500);
  const send = (pkts: Uint8Array[]) => {
    for (let i = 0; i < pkts.length; i += 64) {
      tx.clear();
      for (const p of pkts.slice(i, i + 64)) tx.push(p);
      app.writeBatch(tx);
    }
  };
  let stopped = false;
  const reader = (async () => {
    for (let n; (n = await app.readBatch(rx)) > 0;) {
      for (let i = 0; i < n; i++) {
        peer.input(rx.slots[i].slice(0, rx.lengths[i]), performance.now());
      }
      peer.readAll();
      send(peer.poll(performance.now()));
    }
  })();
  const ticker = (async () => {
    while (!stopped) {
      const now = performance.now();
      if (peer.deadline() <= now) peer.onTimeout(now);
      send(peer.poll(now));
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  const until = async (what: string, cond: () => boolean) => {
    const t0 = performance.now();
    while (!cond()) {
      if (performance.now() - t0 > 5000) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  };
  const stop = async () => {
    stopped = true;
    inbound.close();
    dev.close();
    app.close();
    await Promise.all([running, reader, ticker]);
  };
  return { inbound, peer, send, until, stop };
}

Deno.test("TUN inbound: an application's reset after its half-close resets the outbound", async () => {
  const stream = new FakeStream();
  const h = harness(stream);
  try {
    h.peer.connect();
    await h.until("the connection", () => h.peer.state === "established");
    h.peer.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
    h.peer.close();
    await h.until("the half-close passed on", () => stream.calls.includes("closeWrite"));
    await h.until("data flowing", () => h.peer.data.length > 100_000);
    // The application is gone: its kernel answers RST (seq = what it sent, FIN included).
    const hl = 20;
    const out = new Uint8Array(hl + 20);
    const tl = emitTcp(
      {
        srcPort: 40000,
        dstPort: 80,
        seq: (h.peer.o.isn + h.peer.sndNxt) >>> 0,
        ack: 0,
        flags: TcpFlags.RST,
        window: 0,
      },
      new Uint8Array(0),
      APP,
      DST,
      out,
      hl,
    );
    emitIpHeader({ src: APP, dst: DST, protocol: IpProtocol.Tcp, ttl: 64, payloadLength: tl }, out);
    h.send([out.subarray(0, hl + tl)]);
    await h.until("the outbound released", () => stream.calls.length > 1);
    assertEquals(stream.calls, ["closeWrite", "reset"]);
  } finally {
    await h.stop();
  }
});

Deno.test("TUN inbound: a connection that ends cleanly closes its outbound", async () => {
  const stream = new FakeStream(300_000);
  const h = harness(stream);
  try {
    h.peer.connect();
    await h.until("the connection", () => h.peer.state === "established");
    h.peer.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
    h.peer.close();
    await h.until("everything delivered", () => h.peer.data.length === 300_000);
    await h.until("the outbound released", () => stream.calls.length > 1);
    assertEquals(stream.calls, ["closeWrite", "close"]);
    assert(h.inbound.stats.tcpAccepted === 1);
  } finally {
    await h.stop();
  }
});
