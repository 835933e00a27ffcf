/**
 * The TUN inbound tells the stack how much UDP the tunnel carries: an application's datagram
 * larger than the tunnel's room (per address family, which the relay header depends on) gets
 * "fragmentation needed" / "packet too big" back through the TUN instead of vanishing in the
 * outbound; one that fits reaches the outbound; the room follows the tunnel when it changes.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { TunInbound } from "../../client/inbound/tun.ts";
import { NameMap } from "../../client/dns/name_map.ts";
import type { Outbound, UdpFlow } from "../../client/outbound/outbound.ts";
import type { Target } from "../../shared/duplex.ts";
import { PacketBatch } from "../../shared/tun/device.ts";
import { tunPair } from "../../shared/tun/pair.ts";
import { emitIpHeader, parseIp } from "../../shared/netstack/wire/packet.ts";
import { emitUdp } from "../../shared/netstack/wire/udp.ts";
import { IpProtocol } from "../../shared/netstack/wire/ip_protocol.ts";

const APP4 = new Uint8Array([172, 19, 0, 1]);
const DST4 = new Uint8Array([10, 202, 0, 2]);
const APP6 = new Uint8Array([0xfd, 0xfe, 0xdc, 0xba, 0x98, 0x76, ...new Array(9).fill(0), 1]);
const DST6 = new Uint8Array([0x20, 1, 0xd, 0xb8, 2, 2, ...new Array(9).fill(0), 2]);

function udpPacket(src: Uint8Array, dst: Uint8Array, len: number): Uint8Array {
  const hl = src.length === 4 ? 20 : 40;
  const out = new Uint8Array(hl + 8 + len);
  const ul = emitUdp({ srcPort: 40000, dstPort: 5201 }, new Uint8Array(len), src, dst, out, hl);
  emitIpHeader(
    { src, dst, protocol: IpProtocol.Udp, ttl: 64, payloadLength: ul, dontFragment: true },
    out,
    0,
  );
  return out;
}

Deno.test("TUN inbound: UDP over the tunnel's room gets packet-too-big, per family", async () => {
  const [dev, app] = tunPair({ mtu: 9000 });
  const sent: { target: Target; len: number }[] = [];
  const outbound: Outbound = {
    name: "tunnel",
    dial: () => Promise.reject(new Error("no TCP here")),
    openUdp: (): Promise<UdpFlow> =>
      Promise.resolve({
        send: (target, data) => {
          sent.push({ target, len: data.length });
          return true;
        },
        close: () => {},
      }),
  };
  // What the tunnel pool says: nothing before a session is open, then a session's room.
  let room: (family: 4 | 6) => number | null = () => null;
  const inbound = new TunInbound({
    device: dev,
    outbound,
    names: new NameMap(),
    dns: null,
    dnsAddresses: [],
    hijackDns: false,
    udpMaxPayload: (f) => room(f),
  });
  const running = inbound.run();
  const rx = new PacketBatch(16, 9000);
  const tx = new PacketBatch(1, 9000);
  const send = (p: Uint8Array) => {
    tx.clear();
    tx.push(p);
    assertEquals(app.writeBatch(tx), 1);
  };
  // What comes back to the application: [type, code, the MTU announced] of each ICMP error.
  const back: number[][] = [];
  const reader = (async () => {
    for (let n; (n = await app.readBatch(rx)) > 0;) {
      for (let i = 0; i < n; i++) {
        const ip = parseIp(rx.slots[i].subarray(0, rx.lengths[i]));
        if (typeof ip === "string") throw new Error(ip);
        const v = new DataView(ip.payload.buffer, ip.payload.byteOffset);
        back.push([
          ip.payload[0],
          ip.payload[1],
          ip.version === 4 ? v.getUint16(6) : v.getUint32(4),
        ]);
      }
    }
  })();
  const icmp = async (): Promise<number[][]> => {
    await new Promise((r) => setTimeout(r, 20));
    return back.splice(0);
  };
  try {
    // Room unknown: only the MTU bounds datagrams (what the tunnel cannot carry it drops).
    send(udpPacket(APP4, DST4, 8000));
    assertEquals(await icmp(), []);
    assertEquals(sent.map((s) => s.len), [8000]);
    // The tunnel's room (1350-byte packets: 1254 bytes of datagram, 12 or 24 of relay header).
    room = (f) => (f === 4 ? 1242 : 1230);
    send(udpPacket(APP4, DST4, 8000));
    assertEquals(await icmp(), [[3, 4, 1242 + 28]], "fragmentation needed, next-hop MTU");
    send(udpPacket(APP6, DST6, 1231));
    assertEquals(await icmp(), [[2, 0, 1230 + 48]], "ICMPv6 packet too big");
    send(udpPacket(APP4, DST4, 1242));
    send(udpPacket(APP6, DST6, 1230));
    assertEquals(await icmp(), []);
    assertEquals(sent.map((s) => s.len), [8000, 1242, 1230]);
    assertEquals(sent[2].target, { host: "2001:db8:202::2", port: 5201 });
    // A session with a smaller room replaced the first one.
    room = (f) => (f === 4 ? 1100 : 1088);
    send(udpPacket(APP4, DST4, 1242));
    assertEquals(await icmp(), [[3, 4, 1100 + 28]]);
    assert(inbound.stack.stats.udpDropped >= 3);
  } finally {
    inbound.close();
    dev.close();
    app.close();
    await running;
    await reader;
  }
});
