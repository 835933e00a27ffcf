/**
 * The upstream-proxy VPN mode end to end: `ostp-client vpn up` in the client
 * namespace, squid (Debian's, Basic auth) in the server namespace as the only
 * way on (no forwarding anywhere), an origin (HTTP on IPv4 and IPv6, HTTPS
 * from `openssl s_server`) in the target namespace, dnsmasq beside squid as
 * the allowed resolver. curl, wget and an https:// fetch go through squid
 * (its access log shows each), byte-exact; a connection around the TUN is
 * refused at once; DNS to the allowed resolver answers, to another one and
 * other UDP nothing; IPv6 rides the proxy; with squid stopped applications
 * fail at once; a capture on the physical side shows only squid's port and
 * DNS; `vpn down` and kill -9 + `vpn down` leave routes, rules, firewall and
 * resolver exactly as before; `--dry-run` changes nothing; `--no-killswitch`
 * lets UDP out directly; the iptables backend works the same.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { payload, sha256Hex } from "../support/daemons.ts";
import type { Daemon } from "../support/daemons.ts";
import { ADDR, ADDR6, canUseNetns, run, Testbed } from "../support/netns.ts";
import { which } from "../support/sh.ts";
import { type Dnsmasq, startDnsmasq } from "../support/dnsmasq.ts";
import { haveSquid, ncsaAuth } from "../support/squid.ts";

const enabled = await canUseNetns() && haveSquid && !!ncsaAuth && !!(await which("curl")) &&
  !!(await which("wget")) && !!(await which("dnsmasq")) && !!(await which("tcpdump")) &&
  !!(await which("nft")) && !!(await which("openssl"));
if (!enabled) {
  console.log(
    "SKIPPED netns VPN mode tests: need root, ip netns, squid, curl, wget, dnsmasq, tcpdump, nft, openssl",
  );
}
const haveIptables = !!(await which("iptables")) && !!(await which("ip6tables"));

const ROOT = new URL("../../", import.meta.url).pathname;
const MiB = 1024 * 1024;
const dec = new TextDecoder();
const USER = "alice";
const PASSWORD = "s3cret-" + crypto.randomUUID().slice(0, 8);
const PROXY = ADDR.server;

async function sh(tb: Testbed, ns: string, script: string) {
  const r = await tb.exec(ns, "sh", ["-c", script]);
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

async function snapshot(tb: Testbed, resolv: string): Promise<string> {
  const parts = [];
  for (
    const a of [["rule"], ["-6", "rule"], ["route", "show", "table", "all"], [
      "-6",
      "route",
      "show",
      "table",
      "all",
    ], ["link"]]
  ) {
    const lines = (await run("ip", "-n", tb.client, ...a)).split("\n");
    parts.push(lines.filter((l) => !/ fe80::[0-9a-f:]+ dev /.test(l)).join("\n"));
  }
  parts.push(await run("ip", "netns", "exec", tb.client, "nft", "list", "ruleset"));
  parts.push(await Deno.readTextFile(resolv));
  return parts.join("\n");
}

/** A DNS query for `name` (A) from the client namespace to ip:53: the first answer address, or "". */
async function dnsA(tb: Testbed, ip: string, name: string): Promise<string> {
  const script = `
    const q = new Uint8Array([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0,
      ...${
    JSON.stringify(name)
  }.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]),
      0, 0, 1, 0, 1]);
    const s = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
    await s.send(q, { transport: "udp", hostname: ${JSON.stringify(ip)}, port: 53 });
    const t = setTimeout(() => { console.log(""); Deno.exit(0); }, 1500);
    const [d] = await s.receive();
    clearTimeout(t);
    console.log(d.length >= 16 ? [...d.subarray(d.length - 4)].join(".") : "");
    Deno.exit(0);`;
  const r = await tb.exec(tb.client, Deno.execPath(), ["eval", "--unstable-net", script]);
  return dec.decode(r.stdout).trim();
}

/** A UDP datagram from the client namespace to ip:port: whether the echo came back. */
async function udpEcho(tb: Testbed, ip: string, port: number): Promise<boolean> {
  const r = await tb.exec(tb.client, "timeout", [
    "1",
    "bash",
    "-c",
    `exec 3<>/dev/udp/${ip}/${port}; printf q >&3; head -c1 <&3`,
  ]);
  return dec.decode(r.stdout) === "q";
}

interface Bed {
  tb: Testbed;
  dir: string;
  resolv: string;
  squidPort: number;
  squidLog: string;
  squid: Daemon;
  others: Daemon[];
  dnsmasq: Dnsmasq;
  etc: string;
  close(): Promise<void>;
}

async function makeBed(): Promise<Bed> {
  const tb = await Testbed.createVeth();
  const dir = await Deno.makeTempDir({ prefix: "ostp-vpn-" });
  const etc = `/etc/netns/${tb.client}`;
  const others: Daemon[] = [];
  let dnsmasq: Dnsmasq | null = null;
  let squid: Daemon | null = null;
  const close = async () => {
    await squid?.stop();
    for (const d of others) await d.stop();
    await dnsmasq?.stop();
    await tb.close();
    await Deno.remove(etc, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await Deno.mkdir(etc, { recursive: true });
    const resolv = `${etc}/resolv.conf`;
    await Deno.writeTextFile(resolv, `nameserver ${PROXY}\n`);
    await Deno.chmod(dir, 0o755);
    // The origin: HTTP on both families, HTTPS from openssl.
    const origin = tb.spawnDeno("origin", tb.target, "tests/support/origin_main.ts", [
      `${ADDR.target},${ADDR6.target}`,
      "8080",
    ]);
    others.push(origin);
    await origin.waitFor(/ready/);
    await run(
      "openssl",
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=origin.test",
      "-keyout",
      `${dir}/key.pem`,
      "-out",
      `${dir}/cert.pem`,
    );
    const tls = tb.spawn("s_server", tb.target, "openssl", [
      "s_server",
      "-accept",
      `${ADDR.target}:8443`,
      "-cert",
      `${dir}/cert.pem`,
      "-key",
      `${dir}/key.pem`,
      "-www",
      "-quiet",
    ]);
    others.push(tls);
    // A UDP echo and a TCP listener beside squid: what a leak around the proxy would reach.
    const beside = tb.spawn("beside", tb.server, Deno.execPath(), [
      "eval",
      "--unstable-net",
      `const u = Deno.listenDatagram({ transport: "udp", hostname: "${PROXY}", port: 7 });
       const l = Deno.listen({ hostname: "${PROXY}", port: 8081 });
       (async () => { for await (const c of l) { await c.write(new TextEncoder().encode("leak\\n")); c.close(); } })();
       console.log("ready");
       for await (const [d, from] of u) await u.send(d, from);`,
    ]);
    others.push(beside);
    await beside.waitFor(/ready/);
    dnsmasq = startDnsmasq({
      netns: tb.server,
      address: PROXY,
      records: [`--host-record=origin.test,${ADDR.target},${ADDR6.target}`],
    });
    const squidLog = `${dir}/access.log`;
    squid = tb.spawn("squid", tb.server, Deno.execPath(), [
      "run",
      "-A",
      `${ROOT}tests/support/squid_main.ts`,
      PROXY,
      USER,
      PASSWORD,
      squidLog,
      "8080",
      "8443",
      "53",
    ]);
    const ports = await squid.waitFor(/ports (\d+) (\d+)/, 40_000);
    await squid.waitFor(/ready/, 40_000);
    await Deno.writeTextFile(`${dir}/proxy.pass`, PASSWORD + "\n", { mode: 0o600 });
    // s_server prints nothing when ready: ask it until it answers.
    await sh(
      tb,
      tb.server,
      `for i in $(seq 50); do curl -sk -o /dev/null https://${ADDR.target}:8443/ && break; sleep 0.1; done`,
    );
    return {
      tb,
      dir,
      resolv,
      squidPort: Number(ports[2]),
      squidLog,
      squid,
      others,
      dnsmasq,
      etc,
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}

function vpnArgs(bed: Bed, extra: string[] = []): string[] {
  return [
    "run",
    "-A",
    "--unstable-net",
    `${ROOT}client/main.ts`,
    "vpn",
    "up",
    "--proxy-host",
    PROXY,
    "--proxy-port",
    String(bed.squidPort),
    "--username",
    USER,
    "--password-file",
    `${bed.dir}/proxy.pass`,
    "--dns",
    PROXY,
    "--state-dir",
    `${bed.dir}/state`,
    "--tun-name",
    "tun0",
    "--tun-cidr",
    "10.255.255.1/30",
    ...extra,
  ];
}

async function vpnDown(bed: Bed): Promise<{ code: number; out: string }> {
  const r = await bed.tb.exec(bed.tb.client, Deno.execPath(), [
    "run",
    "-A",
    `${ROOT}client/main.ts`,
    "vpn",
    "down",
    "--state-dir",
    `${bed.dir}/state`,
  ]);
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

Deno.test({
  name: "netns: vpn up sends every TCP connection through squid, kill switch on, and undoes itself",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const bed = await makeBed();
    const { tb } = bed;
    try {
      const before = await snapshot(tb, bed.resolv);
      // --dry-run prints the plan and changes nothing.
      const dry = await tb.exec(tb.client, Deno.execPath(), vpnArgs(bed, ["--dry-run"]));
      const dryOut = dec.decode(dry.stdout);
      assertEquals(dry.code, 0, dec.decode(dry.stderr));
      for (
        const want of [
          "kill switch",
          "table inet ostp_killswitch",
          "route add default dev tun0",
          "resolv.conf",
        ]
      ) {
        assert(dryOut.includes(want), `dry run names ${want}:\n${dryOut}`);
      }
      assert(!dryOut.includes(PASSWORD), "the password is never printed");
      assertEquals(await snapshot(tb, bed.resolv), before, "--dry-run changed nothing");

      const vpn = tb.spawn("vpn", tb.client, Deno.execPath(), vpnArgs(bed));
      try {
        await vpn.waitFor(/vpn up/, 30_000);
        const cap = new Deno.Command("ip", {
          args: [
            "netns",
            "exec",
            tb.client,
            "tcpdump",
            "-n",
            "-l",
            "-i",
            tb.tunC,
            "-Q",
            "out",
            `not (host ${PROXY} and (tcp port ${bed.squidPort} or port 53)) and not arp ` +
            "and not (ip6 and (dst net ff02::/16 or (src net fe80::/10 and dst net fe80::/10)))",
          ],
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        await new Promise((r) => setTimeout(r, 1000));
        const url = `http://${ADDR.target}:8080`;
        const down = await sh(tb, tb.client, `curl -sS -m 60 ${url}/bytes/${16 * MiB} | sha256sum`);
        assertEquals(down.out.split(" ")[0], await sha256Hex(payload(16 * MiB, 1)), down.err);
        const file = `${bed.dir}/up.bin`;
        await Deno.writeFile(file, payload(8 * MiB, 5));
        const up = await sh(tb, tb.client, `curl -sS -m 60 --data-binary @${file} ${url}/upload`);
        assertEquals(up.out.trim(), `${8 * MiB} ${await sha256Hex(payload(8 * MiB, 5))}`, up.err);
        const wget = await sh(tb, tb.client, "wget -q -O - http://origin.test:8080/hello");
        assertEquals(wget.out, "hello\n", `wget by name: ${wget.err}`);
        const https = await sh(tb, tb.client, `curl -sS -k -m 20 https://${ADDR.target}:8443/`);
        assert(/s_server|Ciphers/i.test(https.out), `https fetch: ${https.err}`);
        const six = await sh(
          tb,
          tb.client,
          `curl -sS -m 20 -g 'http://[${ADDR6.target}]:8080/hello'`,
        );
        assertEquals(six.out, "hello\n", `IPv6 through the proxy: ${six.err}`);
        // Around the TUN (bound to the physical interface): refused at once, nothing leaves.
        const t0 = performance.now();
        const around = await sh(
          tb,
          tb.client,
          `curl -sS -m 5 --interface ${tb.tunC} http://${PROXY}:8081/`,
        );
        assert(around.code !== 0 && !around.out.includes("leak"), `around the TUN: ${around.out}`);
        assert(performance.now() - t0 < 3000, "refused at once");
        // DNS: the allowed resolver answers, another gets nothing; other UDP is blocked.
        assertEquals(await dnsA(tb, PROXY, "origin.test"), ADDR.target, "allowed resolver");
        assertEquals(await dnsA(tb, "192.0.2.99", "origin.test"), "", "another resolver");
        assert(!(await udpEcho(tb, PROXY, 7)), "UDP is blocked");
        // The self-test: the resolver directly and over the proxy, and what is in force.
        const selfTest = await tb.exec(tb.client, Deno.execPath(), [
          "run",
          "-A",
          "--unstable-net",
          `${ROOT}client/main.ts`,
          "vpn",
          "self-test",
          ...vpnArgs(bed).slice(vpnArgs(bed).indexOf("up") + 1),
          "--name",
          "origin.test",
        ]);
        const st = dec.decode(selfTest.stdout);
        assertEquals(selfTest.code, 0, st + dec.decode(selfTest.stderr));
        assert(st.includes(`(UDP): ${ADDR.target}`), st);
        assert(st.includes(`over the proxy (TCP, CONNECT): ${ADDR.target}`), st);
        assert(st.includes("lookup 7331") && st.includes("ostp_killswitch"), st);
        assert(!st.includes(PASSWORD), "the password is never printed");
        // squid saw each tunnel; then, squid stopped: applications fail at once, nothing leaks.
        await bed.squid.stop();
        const log = await Deno.readTextFile(bed.squidLog);
        for (
          const want of [
            `CONNECT ${ADDR.target}:8080`,
            `CONNECT ${ADDR.target}:8443`,
            `CONNECT [${ADDR6.target}]:8080`,
            `CONNECT ${PROXY}:53`,
          ]
        ) assert(log.includes(want), `squid's log has ${want}:\n${log}`);
        assert(log.includes(USER), "authenticated as the user");
        const t1 = performance.now();
        const dead = await sh(tb, tb.client, `curl -sS -m 10 ${url}/hello`);
        assert(dead.code !== 0, "fails with the proxy down");
        assert(
          performance.now() - t1 < 3000,
          `fails at once (${(performance.now() - t1).toFixed(0)} ms)`,
        );
        await new Promise((r) => setTimeout(r, 300));
        cap.kill("SIGINT");
        const capOut = await cap.output();
        assertEquals(
          dec.decode(capOut.stdout).trim(),
          "",
          "only squid and DNS on the physical side",
        );
        // `vpn down` from another process stops it and undoes everything.
        const d = await vpnDown(bed);
        assertEquals(d.code, 0, d.out);
        const exit = await vpn.stop();
        assertEquals(exit.code, 0, vpn.output.slice(-5).join("\n"));
      } finally {
        await vpn.stop("SIGKILL");
      }
      assertEquals(await snapshot(tb, bed.resolv), before, "vpn down restores the host");
      assert(!vpn.output.some((l) => l.includes(PASSWORD)), "the password is never logged");
    } finally {
      await bed.close();
    }
  },
});

for (const backend of ["nft", "iptables"] as const) {
  Deno.test({
    name:
      `netns: vpn killed with SIGKILL is undone exactly by vpn down (${backend}); --no-killswitch lets UDP out`,
    ignore: !enabled || (backend === "iptables" && !haveIptables),
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const bed = await makeBed();
      const { tb } = bed;
      try {
        if (backend === "iptables") {
          // iptables-nft makes its empty accept-all tables on first use: the baseline has them.
          for (const t of ["iptables", "ip6tables"]) {
            for (const op of ["-A", "-D"]) {
              await run("ip", "netns", "exec", tb.client, t, "-w", op, "OUTPUT", "-j", "ACCEPT");
            }
          }
        }
        const before = await snapshot(tb, bed.resolv);
        const spawnVpn = (extra: string[] = []) =>
          backend === "iptables"
            ? tb.spawn("vpn", tb.client, "env", [
              "OSTP_FIREWALL=iptables",
              Deno.execPath(),
              ...vpnArgs(bed, extra),
            ])
            : tb.spawn("vpn", tb.client, Deno.execPath(), vpnArgs(bed, extra));
        const vpn = spawnVpn();
        try {
          await vpn.waitFor(/vpn up/, 30_000);
          const ok = await sh(tb, tb.client, `curl -sS -m 20 http://${ADDR.target}:8080/hello`);
          assertEquals(ok.out, "hello\n", ok.err);
          assert(!(await udpEcho(tb, PROXY, 7)), "UDP is blocked");
          const fw = backend === "nft"
            ? await run("ip", "netns", "exec", tb.client, "nft", "list", "ruleset")
            : await run("ip", "netns", "exec", tb.client, "iptables", "-S");
          assert(
            /ostp_killswitch|OSTP_KILLSWITCH/.test(fw),
            `the ${backend} kill switch is up:\n${fw}`,
          );
          await vpn.stop("SIGKILL");
          const left = await snapshot(tb, bed.resolv);
          assert(left !== before, "the crash left its changes");
          const d = await vpnDown(bed);
          assertEquals(d.code, 0, d.out);
        } finally {
          await vpn.stop("SIGKILL");
        }
        assertEquals(
          await snapshot(tb, bed.resolv),
          before,
          "down after a crash restores the host",
        );
        // Without the kill switch UDP goes out directly (the client's marked socket).
        const open = spawnVpn(["--no-killswitch"]);
        try {
          await open.waitFor(/vpn up/, 30_000);
          assert(await udpEcho(tb, PROXY, 7), "UDP out directly with --no-killswitch");
          const ok = await sh(tb, tb.client, `curl -sS -m 20 http://${ADDR.target}:8080/hello`);
          assertEquals(ok.out, "hello\n", ok.err);
        } finally {
          await open.stop();
        }
        assertEquals(await snapshot(tb, bed.resolv), before, "a clean stop restores the host");
      } finally {
        await bed.close();
      }
    },
  });
}
