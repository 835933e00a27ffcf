/**
 * The Wintun device (ffi/tun_windows.ts) against a fake wintun.dll session
 * (tests/support/fake_wintun.ts): the TUN device conformance suite every
 * device passes, and what is Wintun's own (a full send ring drops, a packet
 * longer than the MTU from the system is skipped).
 */
import { assertEquals } from "../support/assert.ts";
import { PacketBatch } from "../../shared/tun/device.ts";
import { tunPair } from "../../shared/tun/pair.ts";
import { WintunTun } from "../../ffi/tun_windows.ts";
import { FakeWintun } from "../support/fake_wintun.ts";
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

for (const mtu of [1420, 1280, 9000]) {
  tunDeviceConformance(`wintun (fake dll) mtu ${mtu}`, () => {
    // The pair has no MTU of its own here: the Wintun device enforces it.
    const [system, net] = tunPair({ mtu: 65535 });
    const fake = new FakeWintun(system);
    const dev = new WintunTun("ostp0", mtu, fake);
    const echo = runEchoPeer(net);
    const h: TunHarness = {
      device: dev,
      v4: V4,
      v6: V6,
      sendUdp(family, port, payloads) {
        const a = family === 4 ? V4 : V6;
        net.writeBatch(udpBatch(a.peer, a.local, port, payloads, 65535));
        return Promise.resolve();
      },
      async close() {
        net.close();
        fake.close();
        await echo;
        await fake.done();
      },
    };
    return Promise.resolve(h);
  });
}

Deno.test("wintun: a full send ring drops packets (counted), a packet above the MTU is skipped", async () => {
  const [system, net] = tunPair({ mtu: 65535, queue: 4 });
  const fake = new FakeWintun(system);
  const dev = new WintunTun("ostp0", 1420, fake);
  try {
    const tx = new PacketBatch(8, 1420);
    for (let i = 0; i < 8; i++) tx.push(echoRequest(V4.local, V4.peer, 1, i, 60));
    assertEquals(dev.writeBatch(tx), 4, "the system's queue took four");
    assertEquals(fake.stats.sendDropped, 4);
    // The system sends one packet too big for the device, then one that fits.
    const big = new PacketBatch(2, 65535);
    big.push(echoRequest(V4.peer, V4.local, 2, 1, 2000));
    big.push(echoRequest(V4.peer, V4.local, 2, 2, 100));
    net.writeBatch(big);
    const rx = new PacketBatch(8, 1420);
    assertEquals(await dev.readBatch(rx), 1);
    assertEquals(rx.lengths[0], 100);
  } finally {
    dev.close();
    net.close();
    await fake.done();
  }
});
