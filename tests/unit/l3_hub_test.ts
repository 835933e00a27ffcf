import { assertEquals } from "../support/assert.ts";
import { L3Hub } from "../../shared/l3/hub.ts";
import { prng } from "../support/simnet.ts";

function v4(src: number[], dst: number[]): Uint8Array {
  const p = new Uint8Array(28);
  p[0] = 0x45;
  p[3] = 28;
  p[9] = 17;
  p.set(src, 12);
  p.set(dst, 16);
  return p;
}

function v6(src: number, dst: number, dstFirst = 0xfd): Uint8Array {
  const p = new Uint8Array(48);
  p[0] = 0x60;
  p[5] = 8;
  p[6] = 17;
  p[8] = 0xfd;
  p[9] = 0x77;
  p[23] = src;
  p[24] = dstFirst;
  p[25] = dstFirst === 0xfd ? 0x77 : 0x02;
  p[39] = dst;
  return p;
}

Deno.test("l3 hub: client to client direct, to the server and beyond via the TUN, back by address", () => {
  const hub = new L3Hub({ broadcast: "10.77.0.255" });
  hub.attach(1, { v4: "10.77.0.2", v6: "fd77::2" });
  hub.attach(2, { v4: "10.77.0.3", v6: "fd77::3" });
  assertEquals(hub.fromSession(1, v4([10, 77, 0, 2], [10, 77, 0, 3])), {
    to: "session",
    session: 2,
  });
  assertEquals(hub.fromSession(1, v4([10, 77, 0, 2], [10, 77, 0, 1])), { to: "tun" });
  assertEquals(hub.fromSession(1, v4([10, 77, 0, 2], [192, 0, 2, 1])), { to: "tun" });
  assertEquals(hub.fromSession(2, v6(3, 2)), { to: "session", session: 1 });
  assertEquals(hub.fromTun(v4([10, 77, 0, 1], [10, 77, 0, 3])), { to: "session", session: 2 });
  assertEquals(hub.fromTun(v6(1, 2)), { to: "session", session: 1 });
  assertEquals(hub.fromTun(v4([10, 77, 0, 1], [10, 77, 0, 99])), {
    to: "drop",
    reason: "no-route",
  });
  assertEquals(hub.counters.sessionToSession, 2);
  assertEquals(hub.counters.tunToSession, 2);
});

Deno.test("l3 hub: spoofed sources, multicast and broadcast are dropped and counted", () => {
  const hub = new L3Hub({ broadcast: "10.77.0.255" });
  hub.attach(1, { v4: "10.77.0.2" });
  hub.attach(2, { v4: "10.77.0.3", v6: "fd77::3" });
  // Session 1 pretending to be session 2, or anyone else.
  assertEquals(hub.fromSession(1, v4([10, 77, 0, 3], [10, 77, 0, 1])).to, "drop");
  assertEquals(hub.fromSession(1, v4([192, 0, 2, 9], [10, 77, 0, 3])).to, "drop");
  // No IPv6 lease: every IPv6 packet is a spoof.
  assertEquals(hub.fromSession(1, v6(2, 3)).to, "drop");
  assertEquals(hub.counters.drops.spoofed, 3);
  assertEquals(hub.fromSession(2, v4([10, 77, 0, 3], [10, 77, 0, 255])), {
    to: "drop",
    reason: "multicast",
  });
  assertEquals(hub.fromSession(2, v4([10, 77, 0, 3], [224, 0, 0, 251])), {
    to: "drop",
    reason: "multicast",
  });
  assertEquals(hub.fromSession(2, v6(3, 1, 0xff)), { to: "drop", reason: "multicast" });
  // A detached session no longer receives, nor sends.
  hub.detach(2);
  assertEquals(hub.fromTun(v4([10, 77, 0, 1], [10, 77, 0, 3])).to, "drop");
  assertEquals(hub.fromSession(2, v4([10, 77, 0, 3], [10, 77, 0, 1])), {
    to: "drop",
    reason: "unknown-session",
  });
});

Deno.test("l3 hub: random bytes only return decisions, never throw", () => {
  const hub = new L3Hub();
  hub.attach(1, { v4: "10.77.0.2", v6: "fd77::2" });
  const rand = prng(9);
  for (let i = 0; i < 20_000; i++) {
    const p = new Uint8Array(Math.floor(rand() * 80));
    for (let k = 0; k < p.length; k++) p[k] = (rand() * 256) | 0;
    if (i % 3 === 0 && p.length > 0) p[0] = (p[0] & 0x0f) | (i % 2 ? 0x40 : 0x60);
    for (const d of [hub.fromSession(1, p), hub.fromTun(p)]) {
      if (!["session", "tun", "drop"].includes(d.to)) throw new Error(JSON.stringify(d));
    }
  }
});
