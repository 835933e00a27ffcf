/**
 * TUN mode's host changes on Windows as plans (client/tun/windows_plan.ts):
 * the exact netsh/route commands and their undo, the DNS-leak rule's address
 * ranges, the default route read from `route print`, and the whole plan
 * journaled and undone in reverse through a fake runner.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  DNS_LEAK_RULE,
  ipv4Complement,
  parseDefaultRoute,
  parseDefaultRoute6,
  windowsTunChanges,
} from "../../client/tun/windows_plan.ts";
import { HostJournal } from "../../shared/host/journal.ts";

/** `route print -4 0.0.0.0` on a laptop with Wi-Fi and a (lower priority) Ethernet. */
const ROUTE_PRINT = `===========================================================================
Interface List
 12...3c 22 fb 11 22 33 ......Intel(R) Wi-Fi 6 AX201 160MHz
  1...........................Software Loopback Interface 1
===========================================================================

IPv4 Route Table
===========================================================================
Active Routes:
Network Destination        Netmask          Gateway       Interface  Metric
          0.0.0.0          0.0.0.0      192.168.1.1    192.168.1.23     35
          0.0.0.0          0.0.0.0         10.0.0.1       10.0.0.77     50
===========================================================================
Persistent Routes:
  None
`;

Deno.test("windows plan: the default route from route print (lowest metric)", () => {
  assertEquals(parseDefaultRoute(ROUTE_PRINT), {
    address: "192.168.1.1",
    interfaceAddress: "192.168.1.23",
  });
  assertEquals(parseDefaultRoute("Active Routes:\n  None\n"), null);
  assertEquals(
    parseDefaultRoute("          0.0.0.0          0.0.0.0         On-link     10.9.0.2     5\n"),
    null,
    "an on-link row is no gateway",
  );
});

Deno.test("windows plan: the DNS-leak rule's ranges leave out exactly the tunnel's resolvers", () => {
  assertEquals(ipv4Complement(["10.0.85.1"]), "0.0.0.0-10.0.85.0,10.0.85.2-255.255.255.255");
  assertEquals(
    ipv4Complement(["10.0.85.1", "1.1.1.1", "10.0.85.1"]),
    "0.0.0.0-1.1.1.0,1.1.1.2-10.0.85.0,10.0.85.2-255.255.255.255",
  );
  assertEquals(ipv4Complement([]), "0.0.0.0-255.255.255.255");
  assertEquals(ipv4Complement(["0.0.0.0"]), "0.0.0.1-255.255.255.255");
  assertEquals(ipv4Complement(["255.255.255.255"]), "0.0.0.0-255.255.255.254");
});

const OPTS = {
  adapter: "ostp0",
  address: "10.0.85.2/24",
  mtu: 1420,
  dns: ["10.0.85.1"],
  servers: ["203.0.113.5"],
  exclude: ["192.168.0.0/16"],
  gateway: { address: "192.168.1.1", interfaceAddress: "192.168.1.23" },
};

Deno.test("windows plan: address, metric, server and exclusions around, half routes in, DNS", () => {
  const c = windowsTunChanges(OPTS);
  const lines = c.map((x) => x.apply.join(" "));
  assertEquals(lines, [
    "netsh interface ipv4 set address name=ostp0 static 10.0.85.2 255.255.255.0",
    "netsh interface ipv4 set subinterface ostp0 mtu=1420 store=active",
    "netsh interface ipv4 set interface ostp0 metric=1",
    "route add 203.0.113.5 mask 255.255.255.255 192.168.1.1",
    "route add 192.168.0.0 mask 255.255.0.0 192.168.1.1",
    "netsh interface ipv4 add route 0.0.0.0/1 ostp0 metric=1 store=active",
    "netsh interface ipv4 add route 128.0.0.0/1 ostp0 metric=1 store=active",
    "netsh interface ipv6 add route ::/1 ostp0 metric=1 store=active",
    "netsh interface ipv6 add route 8000::/1 ostp0 metric=1 store=active",
    "netsh interface ipv4 set dnsservers name=ostp0 static 10.0.85.1 primary validate=no",
    `netsh advfirewall firewall add rule name=${DNS_LEAK_RULE} dir=out action=block protocol=UDP ` +
    "remoteport=53 remoteip=0.0.0.0-10.0.85.0,10.0.85.2-255.255.255.255,::/0",
    `netsh advfirewall firewall add rule name=${DNS_LEAK_RULE} dir=out action=block protocol=TCP ` +
    "remoteport=53 remoteip=0.0.0.0-10.0.85.0,10.0.85.2-255.255.255.255,::/0",
  ]);
  assertEquals(
    c[3].undo.join(" "),
    "route delete 203.0.113.5 mask 255.255.255.255 192.168.1.1",
  );
  assertEquals(
    c[c.length - 1].undo.join(" "),
    `netsh advfirewall firewall delete rule name=${DNS_LEAK_RULE} protocol=TCP`,
  );
  assert(c.every((x) => x.undo.length > 0), "every change has an undo");
});

Deno.test("windows plan: journaled, made in order, undone in reverse (fake runner)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ran: string[] = [];
    const runner = {
      run(argv: readonly string[]) {
        ran.push(argv.join(" "));
        return Promise.resolve({ code: 0, stderr: "" });
      },
    };
    const { journal } = await HostJournal.open(`${dir}/tun.journal`, { runner });
    const plan = windowsTunChanges({ ...OPTS, gateway: null });
    for (const c of plan) await journal.apply(c);
    assertEquals(ran, plan.map((c) => c.apply.join(" ")));
    ran.length = 0;
    const r = await journal.undoAll();
    assertEquals(r.failed, []);
    assertEquals(ran, plan.map((c) => c.undo.join(" ")).reverse());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("windows plan: IPv6 server addresses and exclusions around the tunnel", () => {
  const route6 = `IPv6 Route Table
===========================================================================
Active Routes:
 If Metric Network Destination      Gateway
 12    306 ::/0                     fe80::1
 14     50 ::/0                     fe80::aa
  1    331 ::1/128                  On-link
===========================================================================`;
  const g6 = parseDefaultRoute6(route6);
  assertEquals(g6, { address: "fe80::aa", ifIndex: 14 });
  assertEquals(parseDefaultRoute6("Active Routes:\n  None\n"), null);
  const c = windowsTunChanges({
    ...OPTS,
    servers: ["203.0.113.5", "2001:db8::5"],
    exclude: ["fd00::/8"],
    gateway6: g6,
  });
  const lines = c.map((x) => x.apply.join(" "));
  assert(lines.includes("netsh interface ipv6 add route 2001:db8::5/128 14 fe80::aa store=active"));
  assert(lines.includes("netsh interface ipv6 add route fd00::/8 14 fe80::aa store=active"));
  const at = lines.indexOf("netsh interface ipv6 add route fd00::/8 14 fe80::aa store=active");
  assert(at < lines.indexOf("netsh interface ipv6 add route ::/1 ostp0 metric=1 store=active"));
});
