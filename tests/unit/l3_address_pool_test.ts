import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { AddressPool, AddressPoolError } from "../../shared/l3/address_pool.ts";

const req = (session: number, owner = "alice", instance = "i1", fixed?: string) => ({
  session,
  owner,
  instance,
  ...(fixed ? { fixed } : {}),
});

Deno.test("l3 pool: the server takes the first address, clients the rest, IPv6 by host number", () => {
  const p = new AddressPool({ subnet: "10.77.0.0/24", subnet6: "fd77::/64" });
  assertEquals(p.server, { v4: "10.77.0.1", prefix: 24, v6: "fd77::1", prefix6: 64 });
  const a = p.lease(req(1));
  assertEquals(a, { ok: true, lease: { v4: "10.77.0.2", prefix: 24, v6: "fd77::2", prefix6: 64 } });
  const b = p.lease(req(2, "bob", "j"));
  assert(b.ok && b.lease.v4 === "10.77.0.3" && b.lease.v6 === "fd77::3");
  assertEquals(p.holderOf("10.77.0.3"), 2);
  assertEquals(p.leased, 2);
});

Deno.test("l3 pool: never one address to two live sessions; the same instance takes its own over", () => {
  const p = new AddressPool({ subnet: "10.77.0.0/24", reserved: ["10.77.0.9"] });
  const a = p.lease(req(1, "alice", "i1"));
  assert(a.ok);
  // Reconnection of the same client process while the old session lives: same address, old replaced.
  const again = p.lease(req(2, "alice", "i1"));
  assertEquals(again, { ok: true, lease: a.lease, replaced: 1 });
  assertEquals(p.holderOf(a.lease.v4), 2);
  // Another device with the same key: another address.
  const other = p.lease(req(3, "alice", "i2"));
  assert(other.ok && other.lease.v4 !== a.lease.v4);
  // A fixed address: the first instance gets it, a second live one is refused with the reason.
  const f1 = p.lease(req(4, "carol", "k1", "10.77.0.9"));
  assert(f1.ok && f1.lease.v4 === "10.77.0.9");
  const f2 = p.lease(req(5, "carol", "k2", "10.77.0.9"));
  assertEquals(f2, { ok: false, reason: "address 10.77.0.9 is in use by another live session" });
  // Once the holder ends, the fixed address is free again.
  p.release(4);
  const f3 = p.lease(req(5, "carol", "k2", "10.77.0.9"));
  assert(f3.ok && f3.lease.v4 === "10.77.0.9");
  // Fixed addresses are never handed from the pool.
  for (let s = 10; s < 40; s++) {
    const r = p.lease(req(s, `u${s}`, "x"));
    assert(r.ok && r.lease.v4 !== "10.77.0.9" && r.lease.v4 !== "10.77.0.1");
  }
});

Deno.test("l3 pool: an owner that comes back gets its address back while it is free", () => {
  const p = new AddressPool({ subnet: "10.77.0.0/29" });
  const a = p.lease(req(1, "alice", "i1"));
  assert(a.ok);
  p.release(1);
  p.lease(req(2, "bob", "j"));
  const back = p.lease(req(3, "alice", "i-new"));
  assert(back.ok && back.lease.v4 === a.lease.v4, JSON.stringify(back));
});

Deno.test("l3 pool: exhaustion and bad configs give reasons", () => {
  const p = new AddressPool({ subnet: "10.77.0.0/30" });
  assert(p.lease(req(1, "a")).ok);
  assertEquals(p.lease(req(2, "b")), {
    ok: false,
    reason: "the layer-3 address pool is exhausted",
  });
  const r = p.lease(req(3, "c", "x", "10.99.0.1"));
  assert(!r.ok && r.reason.includes("outside"));
  for (
    const cfg of [
      { subnet: "10.77.0.1/24" },
      { subnet: "10.77.0.0/31" },
      { subnet: "nonsense" },
      { subnet: "10.77.0.0/24", server: "10.77.1.1" },
      { subnet: "10.77.0.0/24", range: { first: "10.77.0.50", last: "10.77.0.10" } },
      { subnet: "10.77.0.0/24", reserved: ["10.77.0.1"] },
      { subnet: "10.77.0.0/24", subnet6: "fd77::1:0:0/64" },
    ]
  ) assertThrows(() => new AddressPool(cfg), AddressPoolError);
});
