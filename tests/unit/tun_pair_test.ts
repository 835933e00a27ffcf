/**
 * The in-memory TUN pair: the conformance suite (the other end plays the
 * network with an echo responder), and what is specific to the pair.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { CSUM_PARTIAL, GSO_TCP4, PacketBatch, TunError } from "../../shared/tun/device.ts";
import { tunPair } from "../../shared/tun/pair.ts";
import {
  echoRequest,
  runEchoPeer,
  tunDeviceConformance,
  type TunHarness,
  udpBatch,
} from "../conformance/tun_device.ts";

const V4 = { local: new Uint8Array([10, 9, 0, 2]), peer: new Uint8Array([10, 9, 0, 1]) };
const V6 = {
  local: new Uint8Array([0xfd, 9, ...new Array(13).fill(0), 2]),
  peer: new Uint8Array([0xfd, 9, ...new Array(13).fill(0), 1]),
};

for (const [mtu, offload] of [[1500, false], [1280, false], [9000, false], [1500, true]] as const) {
  tunDeviceConformance(`tunPair mtu ${mtu}${offload ? " with offloads" : ""}`, () => {
    const [dev, peer] = tunPair({ mtu, offload, queue: offload ? 256 : undefined });
    const echo = runEchoPeer(peer);
    const h: TunHarness = {
      device: dev,
      v4: V4,
      v6: V6,
      sendUdp(family, port, payloads) {
        const a = family === 4 ? V4 : V6;
        peer.writeBatch(udpBatch(a.peer, a.local, port, payloads, mtu));
        return Promise.resolve();
      },
      async close() {
        peer.close();
        await echo;
      },
    };
    return Promise.resolve(h);
  });
}

Deno.test("tunPair: a full queue drops (counted) instead of growing", async () => {
  const [a, b] = tunPair({ queue: 4 });
  const tx = new PacketBatch(6, 1500);
  for (let i = 0; i < 6; i++) tx.push(echoRequest(V4.local, V4.peer, 1, i, 60));
  assertEquals(a.writeBatch(tx), 4);
  assertEquals(a.stats, { sent: 4, dropped: 2, received: 0 });
  const rx = new PacketBatch(8, 1500);
  assertEquals(await b.readBatch(rx), 4);
  assertEquals(b.stats.received, 4);
  a.close();
  b.close();
});

Deno.test("tunPair: writes towards a closed end are dropped, not thrown", () => {
  const [a, b] = tunPair();
  b.close();
  const tx = new PacketBatch(1, 1500);
  tx.push(echoRequest(V4.local, V4.peer, 1, 1, 60));
  assertEquals(a.writeBatch(tx), 0);
  assertEquals(a.stats.dropped, 1);
  a.close();
});

Deno.test("tunPair: enforceMtu false lets a 64 KiB packet through", async () => {
  const [a, b] = tunPair({ mtu: 1500, enforceMtu: false });
  const tx = new PacketBatch(1);
  tx.push(echoRequest(V4.local, V4.peer, 1, 1, 65535));
  assertEquals(a.writeBatch(tx), 1);
  const rx = new PacketBatch(2);
  assertEquals(await b.readBatch(rx), 1);
  assertEquals(rx.lengths[0], 65535);
  a.close();
  b.close();
});

Deno.test("tunPair: bad options are RangeErrors; errors are TunErrors with a kind", () => {
  let n = 0;
  for (const o of [{ mtu: 10 }, { mtu: 70000 }, { queue: 0 }]) {
    try {
      tunPair(o);
    } catch (e) {
      if (e instanceof RangeError) n++;
    }
  }
  assertEquals(n, 3);
  const e = new TunError("closed", "x");
  assert(e instanceof Error && e.kind === "closed" && e.name === "TunError");
});

Deno.test("PacketBatch: push, packet views, capacity and slot limits", () => {
  const b = new PacketBatch(2, 100);
  assert(b.push(new Uint8Array([0x45, 1, 2])));
  assert(!b.push(new Uint8Array(101)), "longer than a slot");
  assert(b.push(new Uint8Array(100)));
  assert(!b.push(new Uint8Array(1)), "full");
  assertEquals(b.count, 2);
  assertEquals(b.packet(0), new Uint8Array([0x45, 1, 2]));
  assertEquals(b.slots[1].byteOffset, 100);
  b.clear();
  assertEquals(b.count, 0);
  let threw = 0;
  for (const [c, s] of [[0, 100], [5000, 100], [1, 19], [1, 65536]]) {
    try {
      new PacketBatch(c, s);
    } catch (e) {
      if (e instanceof RangeError) threw++;
    }
  }
  assertEquals(threw, 4);
});

Deno.test("tunPair offload: super-segment metadata crosses unchanged, unsegmented", async () => {
  const [a, b] = tunPair({ offload: true });
  assertEquals(a.offload, { tso: true, uso: true, checksum: true });
  const tx = new PacketBatch(1);
  tx.push(echoRequest(V4.local, V4.peer, 1, 1, 40000));
  tx.gsoKind[0] = GSO_TCP4;
  tx.gsoSize[0] = 1448;
  tx.hdrLen[0] = 52;
  tx.flags[0] = CSUM_PARTIAL;
  tx.csumStart[0] = 20;
  tx.csumOffset[0] = 16;
  assertEquals(a.writeBatch(tx), 1);
  const rx = new PacketBatch(4);
  assertEquals(await b.readBatch(rx), 1);
  assertEquals(
    [rx.lengths[0], rx.gsoKind[0], rx.gsoSize[0], rx.hdrLen[0], rx.flags[0], rx.csumStart[0]],
    [40000, GSO_TCP4, 1448, 52, CSUM_PARTIAL, 20],
  );
  assertEquals(rx.csumOffset[0], 16);
  // A plain packet over the MTU is still oversize.
  tx.clear();
  tx.push(echoRequest(V4.local, V4.peer, 1, 2, 1501));
  let kind = "";
  try {
    a.writeBatch(tx);
  } catch (e) {
    kind = e instanceof TunError ? e.kind : String(e);
  }
  assertEquals(kind, "oversize");
  a.close();
  b.close();
});
