import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { clientCarriers } from "../../client/outbound/carrier_routes.ts";
import type { ClientCarriersConfig } from "../../shared/config/carrier_config.ts";

const base: ClientCarriersConfig = {
  carrier: "auto",
  fallback: ["udp", "faketcp", "uot"],
  tls: { port: 443 },
  fec: "off",
  uotPort: 9000,
  // A directory nobody can make: fake-TCP's journal has no home.
  stateDir: "/proc/ostp-no-such-dir",
};

Deno.test("carrier routes: the fallback order, ports, and fake-TCP left out when it cannot run", async () => {
  const c = await clientCarriers(base, "h.example", { connectTimeoutMs: 1000 });
  try {
    assertEquals(c.routes.map((r) => r.dialer.kind), ["udp", "uot"]);
    assertEquals(c.routes.map((r) => r.port), [undefined, 9000]);
  } finally {
    await c.close();
  }
  const fec = await clientCarriers(
    { ...base, fallback: ["udp"], fec: { data: 10, parity: 3 }, fecPort: 8444 },
    "h.example",
    { connectTimeoutMs: 1000 },
  );
  assertEquals(fec.routes.map((r) => [r.dialer.kind, r.port]), [["udp+fec", 8444]]);
  await fec.close();
});

Deno.test("carrier routes: an explicit fake-TCP that cannot run is an error that says why", async () => {
  const e = await assertRejects(
    () => clientCarriers({ ...base, carrier: "faketcp" }, "h.example", { connectTimeoutMs: 1000 }),
    Error,
  );
  assert(
    e.message.startsWith("fake-TCP needs a state directory it can write (/proc/ostp-no-such-dir"),
    e.message,
  );
});
