/**
 * The server's own addresses in its egress policy follow the host: the
 * interfaces are looked at again on a timer, and a `publicAddress` that is a
 * name is resolved (docs/egress.md). Loopback only: the server listens on
 * 127.0.0.1 and the addresses are fed through the test seams.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { formatAccessKey, generateAccessKey, OstpServer, parseServerConfig } from "../../mod.ts";
import { parseIp } from "../../shared/net/cidr.ts";
import type { Resolver } from "../../server/egress.ts";

function refused(server: OstpServer, ip: string): boolean {
  return !server.egressPolicy.check(parseIp(ip)!, 443).allowed;
}

async function until(cond: () => boolean, ms = 3000): Promise<boolean> {
  const end = performance.now() + ms;
  while (!cond() && performance.now() < end) await new Promise((r) => setTimeout(r, 10));
  return cond();
}

function config(publicAddress?: string) {
  return parseServerConfig({
    listen: ["127.0.0.1:0"],
    keys: [formatAccessKey(generateAccessKey(), "hex")],
    ...(publicAddress ? { publicAddress } : {}),
  });
}

Deno.test("server own addresses: interfaces refreshed on a timer, stopped with the server", async () => {
  const interfaces = ["198.51.99.1"];
  let asked = 0;
  const server = new OstpServer(config(), {
    interfaceAddresses: () => {
      asked++;
      return [...interfaces];
    },
    ownAddressRefreshMs: 50,
  });
  server.start();
  try {
    assert(refused(server, "198.51.99.1"));
    assert(!refused(server, "198.51.99.2"));
    const before = server.egressPolicy;
    // Unchanged addresses: the policy object stays (UDP flows keep their decisions).
    await new Promise((r) => setTimeout(r, 150));
    assert(server.egressPolicy === before, "rebuilt although nothing changed");
    // A new address on an interface (DHCP, a new interface): refused without a reload.
    interfaces.push("198.51.99.2");
    assert(await until(() => refused(server, "198.51.99.2")), "the new address is refused");
    assert(refused(server, "64:ff9b::198.51.99.2"), "in its NAT64 form too");
    // One that went away is open again.
    interfaces.shift();
    assert(await until(() => !refused(server, "198.51.99.1")), "the old address is open again");
  } finally {
    await server.stop();
  }
  const n = asked;
  await new Promise((r) => setTimeout(r, 200));
  assertEquals(asked, n, "no refresh after stop()");
});

Deno.test("server own addresses: a publicAddress name is resolved; a failure is not fatal", async () => {
  const answers: Record<string, string[]> = { "vpn.test": ["198.51.99.7", "2a01:4f8::7"] };
  /** When set, the next lookup waits for it (a lookup still out when a reload comes). */
  let slowOnce: Promise<void> | null = null;
  const lookup: Resolver = async (host) => {
    const wait = slowOnce;
    slowOnce = null;
    if (wait) await wait;
    const a = answers[host];
    if (!a) return Promise.reject(new Error("ENOTFOUND"));
    return Promise.resolve(
      a.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })),
    );
  };
  const server = new OstpServer(config("vpn.test:443"), {
    interfaceAddresses: () => [],
    lookup,
    ownAddressRefreshMs: 50,
  });
  server.start();
  try {
    assert(await until(() => refused(server, "198.51.99.7")), "the resolved address is refused");
    assert(refused(server, "2a01:4f8::7"));
    assert(refused(server, "2002:c633:6307::1"), "in its 6to4 form too");
    assert(!refused(server, "198.51.99.8"));
    // The name moves: the policy follows.
    answers["vpn.test"] = ["198.51.99.8"];
    assert(await until(() => refused(server, "198.51.99.8")));
    assert(await until(() => !refused(server, "198.51.99.7")));
    // The name stops resolving: what it resolved to last stays refused, the server runs on.
    delete answers["vpn.test"];
    await new Promise((r) => setTimeout(r, 150));
    assert(refused(server, "198.51.99.8"));
    // A reload to another name while a lookup of the old one is still out: the new name is
    // resolved right after it (not at the next timer tick).
    answers["vpn.test"] = ["198.51.99.8"];
    answers["vpn2.test"] = ["198.51.99.9"];
    let release = () => {};
    const gate = new Promise<void>((r) => release = r);
    slowOnce = gate;
    const inFlight = server.refreshOwnAddresses();
    server.reload(config("vpn2.test:443"));
    release();
    await inFlight;
    assert(refused(server, "198.51.99.9"), "the new name's address is refused");
    assert(!refused(server, "198.51.99.8"), "the old name's address is open again");
    // A reload to a publicAddress name that never resolves: not fatal either.
    server.reload(config("nowhere.test:443"));
    await server.refreshOwnAddresses();
    assert(!refused(server, "198.51.99.9"), "the old name's address is no longer own");
    assertEquals(server.addresses.length, 1);
  } finally {
    await server.stop();
  }
});
