import { assert, assertEquals } from "../support/assert.ts";
import { L3Service, type L3SessionPort } from "../../server/l3/l3_service.ts";
import { AddressPool } from "../../shared/l3/address_pool.ts";
import { L3Hub } from "../../shared/l3/hub.ts";
import { encodeL3Request, type L3Response, parseL3Response } from "../../shared/l3/control.ts";
import { tunPair } from "../../shared/tun/pair.ts";
import { PacketBatch } from "../../shared/tun/device.ts";
import { BufferedReader, encodeLatin1, writeAll } from "../../shared/pipe.ts";
import type { Duplex } from "../../shared/duplex.ts";

function bed() {
  const [serverTun, kernel] = tunPair({ mtu: 1400 });
  const svc = new L3Service({
    device: serverTun,
    pool: new AddressPool({
      subnet: "10.77.0.0/24",
      subnet6: "fd77::/64",
      reserved: ["10.77.0.50"],
    }),
    hub: new L3Hub({ broadcast: "10.77.0.255" }),
    mtu: 1400,
    routes: ["10.77.0.0/24", "fd77::/64"],
  });
  const running = svc.run();
  return { svc, kernel, running: running.finally(() => {}), serverTun };
}

function port(id: number, owner: string, fixed?: string) {
  const got: Uint8Array[] = [];
  const logs: string[] = [];
  const p: L3SessionPort = {
    id,
    owner,
    ...(fixed ? { fixed } : {}),
    sendDatagram: (d) => (got.push(d.slice()), true),
    log: (m) => logs.push(m),
  };
  return { p, got, logs };
}

async function ask(
  svc: L3Service,
  p: L3SessionPort,
  instance: string,
): Promise<{ r: L3Response; control: Duplex }> {
  const control = svc.openControl(p);
  await writeAll(control, encodeL3Request({ instance, ipv6: true }));
  const line = await new BufferedReader(control).readLine(4096);
  const r = parseL3Response(encodeLatin1(line!));
  if (typeof r === "string") throw new Error(r);
  return { r, control };
}

function ipv4(src: number[], dst: number[], len = 28): Uint8Array {
  const p = new Uint8Array(len);
  p[0] = 0x45;
  p[2] = len >> 8;
  p[3] = len & 255;
  p[8] = 64;
  p[9] = 17;
  p.set(src, 12);
  p.set(dst, 16);
  return p;
}
const dgram = (p: Uint8Array) => new Uint8Array([2, ...p]);

Deno.test("l3 service: leases, client-to-client in the hub, to and from the TUN, spoofs dropped", async () => {
  const { svc, kernel, running, serverTun } = bed();
  try {
    const a = port(1, "alice");
    const b = port(2, "bob");
    const ga = await ask(svc, a.p, "aaaaaaaaaaaaaaaa");
    const gb = await ask(svc, b.p, "bbbbbbbbbbbbbbbb");
    assert(ga.r.ok && gb.r.ok);
    assertEquals([ga.r.address, ga.r.address6, ga.r.server, ga.r.mtu], [
      "10.77.0.2/24",
      "fd77::2/64",
      "10.77.0.1",
      1400,
    ]);
    assertEquals(gb.r.address, "10.77.0.3/24");
    // Client to client: straight to the other session, nothing into the kernel.
    svc.onDatagram(1, dgram(ipv4([10, 77, 0, 2], [10, 77, 0, 3])));
    assertEquals(b.got.length, 1);
    assertEquals(b.got[0][0], 2);
    assertEquals([...b.got[0].subarray(13, 21)], [10, 77, 0, 2, 10, 77, 0, 3]);
    // Client to the server's address: into the TUN.
    svc.onDatagram(1, dgram(ipv4([10, 77, 0, 2], [10, 77, 0, 1])));
    const rx = new PacketBatch(8, 1400);
    assertEquals(await kernel.readBatch(rx), 1);
    assertEquals([...rx.packet(0).subarray(16, 20)], [10, 77, 0, 1]);
    // From the kernel to a client.
    const back = new PacketBatch(1, 1400);
    back.push(ipv4([10, 77, 0, 1], [10, 77, 0, 2]));
    kernel.writeBatch(back);
    await new Promise((r) => setTimeout(r, 10));
    assertEquals(a.got.length, 1);
    // Spoofed: alice claiming bob's address is dropped.
    svc.onDatagram(1, dgram(ipv4([10, 77, 0, 3], [10, 77, 0, 1])));
    assertEquals(b.got.length, 1);
    // Ending the control stream ends the lease.
    ga.control.close();
    await new Promise((r) => setTimeout(r, 10));
    assertEquals(svc.members, 1);
    svc.onDatagram(2, dgram(ipv4([10, 77, 0, 3], [10, 77, 0, 2])));
    assertEquals(a.got.length, 1, "a session without a lease receives nothing");
  } finally {
    svc.close();
    serverTun.close();
    kernel.close();
    await running;
  }
});

Deno.test("l3 service: a fixed address held live is refused with the reason; reconnection keeps the address", async () => {
  const { svc, kernel, running, serverTun } = bed();
  try {
    const c1 = port(1, "carol", "10.77.0.50");
    const c2 = port(2, "carol", "10.77.0.50");
    const g1 = await ask(svc, c1.p, "1111111111111111");
    assert(g1.r.ok && g1.r.address === "10.77.0.50/24");
    const g2 = await ask(svc, c2.p, "2222222222222222");
    assertEquals(g2.r, {
      ok: false,
      reason: "address 10.77.0.50 is in use by another live session",
    });
    assertEquals(c2.logs, [
      "layer 3 refused: address 10.77.0.50 is in use by another live session",
    ]);
    // The same client instance on a new session (a reconnection): same address, old lease ended.
    const d1 = port(3, "dave");
    const first = await ask(svc, d1.p, "3333333333333333");
    const d2 = port(4, "dave");
    const again = await ask(svc, d2.p, "3333333333333333");
    assert(first.r.ok && again.r.ok);
    assertEquals(again.r.address, first.r.address);
    assertEquals(svc.members, 2);
  } finally {
    svc.close();
    serverTun.close();
    kernel.close();
    await running;
  }
});
