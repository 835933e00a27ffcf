/**
 * The layer-3 VPN end to end: one server namespace (the hub, NAT on) and
 * three client namespaces, each joined to the server by its own veth, plus an
 * origin namespace behind the server that only NAT reaches. Kernel tools on
 * both ends: ping and iperf3 (TCP and UDP) client↔server and client↔client,
 * IPv4 and IPv6; a user's fixed address, and a second session asking for it
 * refused with the reason; a client whose path dies reconnects and keeps its
 * address; a spoofed source goes nowhere; with --l3-default-route a client
 * reaches the origin through the server's NAT.
 */
import { assert, assertEquals } from "../support/assert.ts";
import type { Daemon } from "../support/daemons.ts";
import { canUseNetns, run, spawnIn } from "../support/netns.ts";
import { which } from "../support/sh.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

const enabled = await canUseNetns() && !!(await which("ping")) && !!(await which("iperf3")) &&
  !!(await which("nft")) && !!(await which("curl"));
if (!enabled) {
  console.log("SKIPPED netns layer-3 tests: need root, ip netns, ping, iperf3, nft, curl");
}

const ROOT = new URL("../../", import.meta.url).pathname;
const dec = new TextDecoder();

interface Bed {
  id: string;
  server: string;
  clients: string[];
  origin: string;
  dir: string;
  daemons: Daemon[];
  close(): Promise<void>;
}

const spawn = spawnIn;

async function sh(ns: string, script: string) {
  const r = await new Deno.Command("ip", {
    args: ["netns", "exec", ns, "sh", "-c", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

async function makeBed(): Promise<Bed> {
  const id = [...crypto.getRandomValues(new Uint8Array(3))].map((b) =>
    b.toString(16).padStart(2, "0")
  )
    .join("");
  const server = `ostpl3s-${id}`;
  const origin = `ostpl3o-${id}`;
  const clients = [1, 2, 3].map((i) => `ostpl3c${i}-${id}`);
  const dir = await Deno.makeTempDir({ prefix: "ostp-l3-" });
  const daemons: Daemon[] = [];
  const close = async () => {
    for (const d of daemons.reverse()) await d.stop();
    for (const ns of [server, origin, ...clients]) {
      await run("ip", "netns", "del", ns).catch(() => {});
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    for (const ns of [server, origin, ...clients]) {
      await run("ip", "netns", "add", ns);
      await run("ip", "-n", ns, "link", "set", "lo", "up");
    }
    const link = async (ns: string, a: string, b: string, subnet: number, i: string) => {
      await run(
        "ip",
        "link",
        "add",
        `l3a${i}${id}`,
        "netns",
        ns,
        "type",
        "veth",
        "peer",
        "name",
        `l3b${i}${id}`,
        "netns",
        server,
      );
      await run("ip", "-n", ns, "addr", "add", `10.${subnet}.0.${a}/24`, "dev", `l3a${i}${id}`);
      await run("ip", "-n", server, "addr", "add", `10.${subnet}.0.${b}/24`, "dev", `l3b${i}${id}`);
      await run("ip", "-n", ns, "link", "set", `l3a${i}${id}`, "up");
      await run("ip", "-n", server, "link", "set", `l3b${i}${id}`, "up");
    };
    for (let i = 0; i < 3; i++) await link(clients[i], "1", "2", 211 + i, String(i));
    await link(origin, "1", "2", 220, "o");
    return { id, server, clients, origin, dir, daemons, close };
  } catch (e) {
    await close();
    throw e;
  }
}

Deno.test({
  name:
    "netns: layer 3 — three clients and a hub: ping, iperf3, fixed addresses, reconnection, NAT",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const bed = await makeBed();
    try {
      const keys = ["alice", "bob", "carol"].map(() => formatAccessKey(generateAccessKey(), "hex"));
      await Deno.writeTextFile(
        `${bed.dir}/server.json`,
        JSON.stringify({
          listen: ["0.0.0.0:8443"],
          mtu: 1400,
          users: [
            { name: "alice", key: keys[0], address: "10.77.0.50" },
            { name: "bob", key: keys[1] },
            { name: "carol", key: keys[2] },
          ],
          l3: {
            subnet: "10.77.0.0/24",
            subnet6: "fd77::/64",
            nat: true,
            stateDir: `${bed.dir}/srv`,
          },
        }),
      );
      const origin = spawn("origin", bed.origin, Deno.execPath(), [
        "run",
        "-A",
        `${ROOT}tests/support/origin_main.ts`,
        "10.220.0.1",
        "8080",
      ]);
      bed.daemons.push(origin);
      await origin.waitFor(/ready/);
      const server = spawn("server", bed.server, Deno.execPath(), [
        "run",
        "-A",
        "--unstable-net",
        `${ROOT}server/main.ts`,
        "-c",
        `${bed.dir}/server.json`,
        "--no-control",
        "--workers",
        "1",
      ]);
      bed.daemons.push(server);
      await server.waitFor(/layer-3 hub ostp-hub up/, 30_000);
      const client = (i: number, key: string, extra: string[] = [], name = "ostp-l3") => {
        const kf = `${bed.dir}/key${i}-${name}`;
        Deno.writeTextFileSync(kf, key + "\n", { mode: 0o600 });
        const cfg = `${bed.dir}/client${i}-${name}.json`;
        Deno.writeTextFileSync(
          cfg,
          JSON.stringify({ mtu: 1400, l3: { name, stateDir: `${bed.dir}/c${i}-${name}` } }),
        );
        const d = spawn(`client${i}`, bed.clients[i], Deno.execPath(), [
          "run",
          "-A",
          "--unstable-net",
          `${ROOT}client/main.ts`,
          "-s",
          `10.${211 + i}.0.2:8443`,
          "--key-file",
          kf,
          "-c",
          cfg,
          "--l3",
          "--no-control",
          "-l",
          "127.0.0.1:0",
          "--keepalive",
          "1",
          "--idle-timeout",
          "3",
          ...extra,
        ]);
        bed.daemons.push(d);
        return d;
      };
      const c = [
        client(0, keys[0]),
        client(1, keys[1]),
        client(2, keys[2], ["--l3-default-route"]),
      ];
      const addr: string[] = [];
      for (const d of c) {
        addr.push((await d.waitFor(/layer 3 up: ([\d.]+)\/24, fd77::([0-9a-f]+)\/64/, 30_000))[1]);
      }
      assertEquals(addr[0], "10.77.0.50", "alice's fixed address");
      assert(addr[1] !== addr[2] && addr[1] !== "10.77.0.50", addr.join(" "));
      const v6 = (a: string) => `fd77::${Number(a.split(".")[3]).toString(16)}`;
      // ping client→server and client↔client, both families.
      for (
        const [ns, dst] of [
          [bed.clients[0], "10.77.0.1"],
          [bed.clients[0], addr[1]],
          [bed.clients[1], addr[0]],
          [bed.clients[0], "fd77::1"],
          [bed.clients[1], v6(addr[2])],
        ]
      ) {
        const p = await sh(ns, `ping -c 2 -W 2 -i 0.2 ${dst}`);
        assertEquals(p.code, 0, `ping ${dst}: ${p.out}${p.err}`);
      }
      // iperf3 TCP and UDP, client↔client (IPv4 and IPv6) and client→server.
      const iperfServer = (ns: string, bind: string) => {
        const d = spawn(`iperf3 ${bind}`, ns, "iperf3", ["-s", "-B", bind, "-1"]);
        bed.daemons.push(d);
        return d;
      };
      const iperf = async (ns: string, dst: string, extra: string[]) => {
        const r = await sh(ns, `iperf3 -c ${dst} -t 2 -J ${extra.join(" ")}`);
        const j = JSON.parse(r.out || "{}");
        assert(!j.error, `iperf3 to ${dst}: ${j.error ?? r.err}`);
        return j;
      };
      for (
        const [srvNs, bind, cliNs, extra] of [
          [bed.clients[1], addr[1], bed.clients[0], []],
          [bed.clients[1], v6(addr[1]), bed.clients[0], []],
          [bed.server, "10.77.0.1", bed.clients[2], []],
          [bed.clients[0], addr[0], bed.clients[1], ["-u", "-b", "10M", "-l", "1000"]],
        ] as const
      ) {
        const s = iperfServer(srvNs, bind);
        await new Promise((r) => setTimeout(r, 300));
        const j = await iperf(cliNs, bind, [...extra]);
        await s.status;
        const end = j.end;
        if ((extra as readonly string[]).includes("-u")) {
          const sum = end.sum;
          assert(sum.packets > 0 && sum.lost_percent < 20, JSON.stringify(sum));
          console.log(
            `iperf3 -u ${bind}: ${sum.packets} datagrams, ${sum.lost_percent.toFixed(2)}% lost`,
          );
        } else {
          assert(end.sum_received.bytes > 1_000_000, JSON.stringify(end.sum_received));
          console.log(
            `iperf3 ${bind}: ${(end.sum_received.bits_per_second / 1e6).toFixed(0)} Mbit/s`,
          );
        }
      }
      // NAT: the default-route client reaches the origin behind the server.
      const nat = await sh(bed.clients[2], "curl -sS -m 10 http://10.220.0.1:8080/hello");
      assertEquals(nat.out, "hello\n", nat.err);
      // A second live session asking for alice's fixed address is refused with the reason.
      const twin = client(2, keys[0], [], "ostp-l3b");
      await twin.waitFor(
        /layer 3 refused by the server: address 10.77.0.50 is in use by another live session/,
        30_000,
      );
      await server.waitFor(/layer 3 refused: address 10.77.0.50 is in use/, 5000);
      await twin.stop();
      // A spoofed source (an address the client added to its own TUN) goes nowhere.
      await run("ip", "-n", bed.clients[0], "addr", "add", "10.77.0.99/32", "dev", "ostp-l3");
      const spoof = await sh(bed.clients[0], `ping -c 2 -W 1 -I 10.77.0.99 ${addr[1]}`);
      assert(spoof.code !== 0, `a spoofed source got through: ${spoof.out}`);
      // bob's path dies for longer than the idle timeout: a new session, the same address.
      await sh(
        bed.clients[1],
        "nft 'add table inet cut; add chain inet cut out { type filter hook output priority 0; }; " +
          "add rule inet cut out udp dport 8443 drop'",
      );
      // Longer than the client's idle timeout (3 s): its session ends, it handshakes anew.
      await new Promise((r) => setTimeout(r, 6000));
      await sh(bed.clients[1], "nft delete table inet cut");
      const pingBack = async () =>
        (await sh(bed.clients[0], `ping -c 1 -W 1 ${addr[1]}`)).code === 0;
      let ok = false;
      for (let i = 0; i < 40 && !ok; i++) {
        ok = await pingBack();
        if (!ok) await new Promise((r) => setTimeout(r, 500));
      }
      assert(ok, `bob is reachable at ${addr[1]} again after reconnecting`);
      assert(!c[1].output.some((l) => /assigned .* \(was/.test(l)), "the address did not change");
    } finally {
      await bed.close();
    }
  },
});
