import { assert, assertEquals } from "../support/assert.ts";
import { L3Client, type L3Path } from "../../client/l3/l3_client.ts";
import { L3Service } from "../../server/l3/l3_service.ts";
import { AddressPool } from "../../shared/l3/address_pool.ts";
import { L3Hub } from "../../shared/l3/hub.ts";
import { tunPair, type TunPairEnd } from "../../shared/tun/pair.ts";
import { PacketBatch } from "../../shared/tun/device.ts";

/**
 * Both ends in memory: applications ⇄ client TUN ⇄ L3Client ⇄ (sessions) ⇄
 * L3Service ⇄ server TUN ⇄ the server's "kernel".
 */
function world() {
  const [serverTun, serverKernel] = tunPair({ mtu: 1400, names: ["l3s", "kernel"] });
  const svc = new L3Service({
    device: serverTun,
    pool: new AddressPool({ subnet: "10.77.0.0/24" }),
    hub: new L3Hub(),
    mtu: 1400,
    routes: ["10.77.0.0/24"],
  });
  const svcRun = svc.run();
  let nextSession = 1;
  /** A client whose sessions can be ended (a reconnection) with `drop()`. */
  const client = (owner: string, instance: string) => {
    let end: () => void = () => {};
    let apps: TunPairEnd | null = null;
    const c = new L3Client({
      instance,
      ipv6: false,
      retryMs: 20,
      log: () => {},
      open: () => {
        const id = nextSession++;
        let handler: (p: Uint8Array) => void = () => {};
        const closed = new Promise<void>((r) =>
          end = () => {
            svc.sessionClosed(id);
            r();
          }
        );
        const stream = svc.openControl({
          id,
          owner,
          sendDatagram: (d) => (handler(d), true),
          log: () => {},
        });
        const path: L3Path = {
          stream,
          send: (d) => (svc.onDatagram(id, d), true),
          onPacket: (h) => handler = h,
          closed,
        };
        return Promise.resolve(path);
      },
      up: () => {
        const [dev, app] = tunPair({ mtu: 1400 });
        apps = app;
        return Promise.resolve(dev);
      },
    });
    const running = c.run();
    return { c, running, drop: () => end(), apps: () => apps };
  };
  return { svc, svcRun, serverTun, serverKernel, client };
}

function ipv4(src: number[], dst: number[]): Uint8Array {
  const p = new Uint8Array(28);
  p[0] = 0x45;
  p[3] = 28;
  p[8] = 64;
  p[9] = 17;
  p.set(src, 12);
  p.set(dst, 16);
  return p;
}

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("l3 client ⇄ hub: packets between two clients and to the server; a reconnection keeps the address", async () => {
  const w = world();
  const a = w.client("alice", "aaaaaaaaaaaaaaaa");
  const b = w.client("bob", "bbbbbbbbbbbbbbbb");
  try {
    await until(() => !!a.c.grant && !!b.c.grant && !!a.apps() && !!b.apps());
    assertEquals([a.c.grant!.address, b.c.grant!.address], ["10.77.0.2/24", "10.77.0.3/24"]);
    // An application on a sends to b's address: it arrives at b's TUN, not the server's kernel.
    const out = new PacketBatch(1, 1400);
    out.push(ipv4([10, 77, 0, 2], [10, 77, 0, 3]));
    a.apps()!.writeBatch(out);
    const rx = new PacketBatch(8, 1400);
    assertEquals(await b.apps()!.readBatch(rx), 1);
    assertEquals([...rx.packet(0).subarray(12, 20)], [10, 77, 0, 2, 10, 77, 0, 3]);
    // To the server's own address: the server's kernel gets it.
    out.clear();
    out.push(ipv4([10, 77, 0, 2], [10, 77, 0, 1]));
    a.apps()!.writeBatch(out);
    assertEquals(await w.serverKernel.readBatch(rx), 1);
    // a's session ends (a reconnection): the next session gets the same address back.
    a.drop();
    await until(() => a.c.stats.grants === 2);
    assertEquals(a.c.grant!.address, "10.77.0.2/24");
    out.clear();
    out.push(ipv4([10, 77, 0, 3], [10, 77, 0, 2]));
    b.apps()!.writeBatch(out);
    assertEquals(await a.apps()!.readBatch(rx), 1, "b reaches a again after a's reconnection");
    assert(a.c.stats.sent >= 2 && a.c.stats.received >= 1);
  } finally {
    for (const x of [a, b]) {
      x.c.stop();
      x.c.device?.close();
      x.apps()?.close();
    }
    w.svc.close();
    w.serverTun.close();
    w.serverKernel.close();
    await Promise.all([a.running, b.running, w.svcRun]);
  }
});
