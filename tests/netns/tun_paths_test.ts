/**
 * TUN mode on the paths users take, with the daemons as users run them (`ostp-client <link>
 * --tun` in a client namespace whose only way to the origin is the tunnel) and the kernel's TCP
 * (curl, iperf3) as the applications:
 *
 * - IPv6 end to end: the TUN's IPv6 address and auto-route's IPv6 default carry `curl -6` to an
 *   origin on the server ⇄ target link's IPv6 address — 64 MiB each way byte-exact — and a name
 *   with only an AAAA record resolves through the tunnel;
 * - iperf3: TCP, and UDP (a TCP control connection plus UDP data), both through the TUN; a UDP
 *   datagram larger than the tunnel carries is answered "fragmentation needed" / "packet too big"
 *   with the tunnel's room, which the kernel keeps as the path MTU (IPv4);
 * - the link emulator losing 2% each way: 64 MiB each way byte-exact, concurrent connections,
 *   names;
 * - an application that stops reading: the client's memory stays flat while the windows are full,
 *   the connection resumes, and the client serves new requests afterwards.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { payload, sha256Hex } from "../support/daemons.ts";
import { ADDR, ADDR6, canUseNetns, Testbed } from "../support/netns.ts";
import { startTunnel, type TunnelBed } from "../support/tunnel_bed.ts";
import { which } from "../support/sh.ts";
import { type Dnsmasq, startDnsmasq } from "../support/dnsmasq.ts";

const enabled = await canUseNetns() && !!(await which("curl")) &&
  !!(await which("dnsmasq")) && !!(await which("iperf3")) && !!(await which("ss")) &&
  !!(await which("tcpdump"));
if (!enabled) {
  console.log(
    "SKIPPED netns TUN path tests: need root, ip netns, curl, dnsmasq, iperf3, ss, tcpdump",
  );
}

const MiB = 1024 * 1024;
const dec = new TextDecoder();
const URL4 = `http://${ADDR.target}:8080`;
const URL6 = `http://[${ADDR6.target}]:8080`;

async function sh(tb: Testbed, ns: string, script: string) {
  const r = await tb.exec(ns, "sh", ["-c", script]);
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `fn` with origin, server and `ostp-client --tun` up on `tb` (the TUN's default addresses,
 * IPv4 and IPv6, and auto-route), a dnsmasq beside the origin as the tunnel's DNS upstream
 * (`origin.test` A, `origin6.test` AAAA) and the client namespace's resolver pointed at the TUN;
 * everything, the testbed included, is removed afterwards, whatever happened.
 */
async function withTun(
  tb: Testbed,
  fn: (bed: TunnelBed, dir: string) => Promise<void>,
): Promise<void> {
  const etc = `/etc/netns/${tb.client}`;
  const dir = await Deno.makeTempDir({ prefix: "ostp-tunpaths-" });
  let dnsmasq: Dnsmasq | null = null;
  try {
    await Deno.mkdir(etc, { recursive: true });
    await Deno.writeTextFile(`${etc}/resolv.conf`, "nameserver 192.0.2.53\n");
    const cfg = `${dir}/client.json`;
    await Deno.writeTextFile(
      cfg,
      JSON.stringify({
        tun: { stateDir: `${dir}/state`, dns: { upstream: `${ADDR.target}:53` } },
      }),
    );
    dnsmasq = startDnsmasq({
      netns: tb.target,
      address: ADDR.target,
      records: [
        `--host-record=origin.test,${ADDR.target}`,
        `--host-record=origin6.test,${ADDR6.target}`,
      ],
    });
    const bed = await startTunnel(tb, { clientArgs: ["-c", cfg, "--tun"] });
    try {
      await bed.client.waitFor(/tun ostp0 up/, 20_000);
      await fn(bed, dir);
    } finally {
      await bed.stop();
    }
  } finally {
    await dnsmasq?.stop();
    await tb.close();
    await Deno.remove(etc, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** 64 MiB down and 64 MiB up through the TUN, byte-exact; `curlOpt` e.g. "-6". */
async function bulkBothWays(tb: Testbed, dir: string, url: string, curlOpt = ""): Promise<void> {
  const down = await sh(
    tb,
    tb.client,
    `curl ${curlOpt} -sS -g -m 150 '${url}/bytes/${64 * MiB}?seed=3' | sha256sum`,
  );
  assertEquals(down.out.split(" ")[0], await sha256Hex(payload(64 * MiB, 3)), down.err);
  const file = `${dir}/up.bin`;
  await Deno.writeFile(file, payload(64 * MiB, 7));
  const up = await sh(
    tb,
    tb.client,
    `curl ${curlOpt} -sS -g -m 150 --data-binary @${file} '${url}/upload'`,
  );
  assertEquals(up.out.trim(), `${64 * MiB} ${await sha256Hex(payload(64 * MiB, 7))}`, up.err);
}

Deno.test({
  name: "netns: --tun carries IPv6 to an IPv6 origin: 64 MiB each way, an AAAA name",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const tb = await Testbed.createVeth();
    await withTun(tb, async (_bed, dir) => {
      // The client's IPv6 goes into the TUN: its address and the IPv6 default in table 7331.
      const addr = await sh(
        tb,
        tb.client,
        "ip -6 addr show dev ostp0; ip -6 route show table 7331",
      );
      assert(/fdfe:dcba:9876::1\/126/.test(addr.out), addr.out);
      assert(/default dev ostp0/.test(addr.out), addr.out);
      const t0 = performance.now();
      await bulkBothWays(tb, dir, URL6, "-6");
      console.log(`IPv6 64 MiB down + up: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      // A name with only an AAAA record, resolved through the tunnel.
      const named = await sh(
        tb,
        tb.client,
        "curl -6 -sS -m 20 -w ' %{remote_ip}' http://origin6.test:8080/hello",
      );
      assertEquals(named.out, `hello\n ${ADDR6.target}`, `AAAA name: ${named.err}`);
    });
  },
});

/** Runs one iperf3 test from the client namespace against a one-off server in the target's. */
async function iperf3(tb: Testbed, port: number, args: string[]) {
  const server = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      tb.target,
      "iperf3",
      "-s",
      "-1",
      "-J",
      "-B",
      ADDR.target,
      "-p",
      `${port}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const serverOut = server.output();
  try {
    let listening = false;
    for (let i = 0; i < 100 && !listening; i++) {
      listening = !!(await sh(tb, tb.target, `ss -Hltn 'sport = :${port}'`)).out.trim();
      if (!listening) await sleep(100);
    }
    if (!listening) {
      server.kill("SIGTERM");
      const o = await serverOut;
      throw new Error(`iperf3 -s not listening: ${dec.decode(o.stdout)} ${dec.decode(o.stderr)}`);
    }
    const c = await tb.exec(tb.client, "timeout", [
      "30",
      "iperf3",
      "-c",
      ADDR.target,
      "-p",
      `${port}`,
      "-J",
      ...args,
    ]);
    const client = JSON.parse(dec.decode(c.stdout) || "{}");
    // The one-off server ends by itself once its test is over.
    const done = await Promise.race([serverOut, sleep(10_000).then(() => null)]);
    const s = done ?? (server.kill("SIGTERM"), await serverOut);
    return { code: c.code, client, server: JSON.parse(dec.decode(s.stdout) || "{}") };
  } finally {
    try {
      server.kill("SIGKILL");
    } catch {
      // already gone
    }
    await serverOut;
  }
}

Deno.test({
  name: "netns: --tun carries iperf3 TCP and UDP; UDP over the tunnel's room gets its path MTU",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const tb = await Testbed.createVeth();
    await withTun(tb, async () => {
      const tcp = await iperf3(tb, 5201, ["-t", "3"]);
      assertEquals(tcp.client.error, undefined, JSON.stringify(tcp.client.error));
      assertEquals(tcp.code, 0);
      const rx = tcp.client.end.sum_received;
      assert(rx.bytes > 0, JSON.stringify(rx));
      console.log(
        `iperf3 TCP: ${(rx.bits_per_second / 1e6).toFixed(0)} Mbit/s received, ` +
          `${(rx.bytes / MiB).toFixed(0)} MiB in ${rx.seconds.toFixed(1)} s`,
      );
      // -l: iperf3 sizes UDP datagrams by the control connection's MSS (8948: the TUN's MTU is
      // 9000) and, once told the path MTU, lets the kernel fragment them; the tunnel carries one
      // datagram of at most its room (below), so those would all be lost.
      const udp = await iperf3(tb, 5202, ["-u", "-b", "20M", "-l", "1200", "-t", "3"]);
      assertEquals(udp.client.error, undefined, JSON.stringify(udp.client.error));
      assertEquals(udp.code, 0);
      const got = udp.server.end?.sum;
      assert(got && got.packets > 0, JSON.stringify(udp.server));
      const sent = udp.client.end.sum;
      console.log(
        `iperf3 UDP 20 Mbit/s: server received ${got.packets - got.lost_packets} of ` +
          `${got.packets} datagrams (${got.lost_percent.toFixed(2)}% lost), ` +
          `${((udp.server.end.sum_received ?? got).bits_per_second / 1e6).toFixed(1)} Mbit/s, ` +
          `jitter ${got.jitter_ms.toFixed(3)} ms; client sent ${sent.packets}`,
      );
      assert(got.packets - got.lost_packets > 0, JSON.stringify(got));
      assert(got.lost_percent < 20, `UDP loss ${got.lost_percent}%`);
      // A datagram larger than the tunnel carries: the stack answers "fragmentation needed" with
      // the tunnel's room, and the kernel keeps it as the path MTU (the sending socket has to be
      // open still when the error arrives).
      const v4 = await sh(
        tb,
        tb.client,
        `bash -c 'exec 3>/dev/udp/${ADDR.target}/9999; head -c 4000 /dev/zero >&3; sleep 1; ` +
          `ip -4 route get ${ADDR.target}'`,
      );
      const pmtu = Number(v4.out.match(/ mtu (\d+)/)?.[1]);
      assert(pmtu >= 1200 && pmtu < 1350, `path MTU from the stack: ${v4.out} ${v4.err}`);
      // IPv6: "packet too big". (Linux ignores one below 1280, the IPv6 minimum: at the default
      // tunnel mtu 1350 the room is 1278 - 48.)
      const cap = new Deno.Command("ip", {
        args: ["netns", "exec", tb.client, "tcpdump", "-n", "-l", "-c", "1", "-i", "ostp0"]
          .concat(["icmp6 and ip6[40] == 2"]),
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      let captured = false;
      const capped = cap.output().finally(() => captured = true);
      // Until tcpdump (attached at its own pace) has seen one.
      for (let i = 0; i < 10 && !captured; i++) {
        await sleep(500);
        await sh(tb, tb.client, `bash -c 'head -c 4000 /dev/zero >/dev/udp/${ADDR6.target}/9999'`);
      }
      await sleep(500);
      if (!captured) cap.kill("SIGINT");
      const ptb = dec.decode((await capped).stdout);
      const ptbMtu = Number(ptb.match(/packet too big, mtu (\d+)/)?.[1]);
      assertEquals(ptbMtu, pmtu - 28 - 12 + 48, `ICMPv6 packet too big: ${ptb}`);
      console.log(`UDP room: path MTU ${pmtu} (IPv4), packet too big mtu ${ptbMtu} (IPv6)`);
    });
  },
});

Deno.test({
  name: "netns: --tun under 2% loss each way: 64 MiB each way, concurrent connections, names",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const tb = await Testbed.create({ loss: 0.02 }, { loss: 0.02 }, 23);
    await withTun(tb, async (_bed, dir) => {
      const t0 = performance.now();
      await bulkBothWays(tb, dir, URL4);
      console.log(
        `2% loss, 64 MiB down + up: ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
      // Eight at once, each its own size and seed.
      const sizes = Array.from({ length: 8 }, (_, i) => (i + 1) * 256 * 1024 + i);
      const par = await sh(
        tb,
        tb.client,
        sizes.map((n, i) =>
          `(curl -sS -m 90 '${URL4}/bytes/${n}?seed=${i + 11}' | sha256sum | sed 's/ .*/ ${i}/') &`
        ).join("\n") + "\nwait",
      );
      const want = await Promise.all(
        sizes.map(async (n, i) => `${await sha256Hex(payload(n, i + 11))} ${i}`),
      );
      assertEquals(par.out.trim().split("\n").sort(), want.sort(), par.err);
      // Names through the lossy tunnel (the resolver retries a lost query).
      for (const [name, opt] of [["origin.test", "-4"], ["origin6.test", "-6"]]) {
        const r = await sh(tb, tb.client, `curl ${opt} -sS -m 30 http://${name}:8080/hello`);
        assertEquals(r.out, "hello\n", `${name}: ${r.err}`);
      }
    });
    console.log(`emulator counters: ${JSON.stringify(tb.counters)}`);
  },
});

function rssMiB(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^VmRSS:\s+(\d+) kB/m);
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) / 1024;
}

Deno.test({
  name: "netns: --tun: an application that stops reading does not grow the client's memory",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const tb = await Testbed.createVeth();
    const endless = tb.spawnDeno("endless", tb.target, "tests/support/endless_main.ts", [
      ADDR.target,
      "8081",
    ]);
    let reader: Deno.ChildProcess | null = null;
    try {
      await endless.waitFor(/^ready$/);
      await withTun(tb, async (bed) => {
        const pid = bed.client.pid;
        assertEquals(Deno.readTextFileSync(`/proc/${pid}/comm`).trim(), "deno");
        // How far the origin got: its latest `sent 0 <bytes>` line.
        const sent = () => {
          for (let i = endless.output.length - 1; i >= 0; i--) {
            const m = endless.output[i].match(/^(?:sent|closed) 0 (\d+)$/);
            if (m) return Number(m[1]);
          }
          return 0;
        };
        const before = rssMiB(pid);
        // `ip netns exec` execs curl: the child's PID is curl's.
        reader = new Deno.Command("ip", {
          args: [
            "netns",
            "exec",
            tb.client,
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            `http://${ADDR.target}:8081/`,
          ],
          stdout: "null",
          stderr: "null",
        }).spawn();
        const curlPid = reader.pid;
        await endless.waitFor(/^sent 0 (\d{8,})$/, 30_000); // ≥ 10 MB: flowing
        Deno.kill(curlPid, "SIGSTOP");
        // The windows fill: the origin's count stops moving.
        const t0 = performance.now();
        let last = -1;
        let still = 0;
        while (still < 4 && performance.now() - t0 < 20_000) {
          await sleep(250);
          const s = sent();
          still = s === last ? still + 1 : 0;
          last = s;
        }
        const filled = (performance.now() - t0) / 1000;
        const atStall = rssMiB(pid);
        const samples: number[] = [];
        const sentAtStall = sent();
        for (let i = 0; i < 12; i++) {
          await sleep(500);
          samples.push(rssMiB(pid));
        }
        const sentGrowth = sent() - sentAtStall;
        const figures = samples.map((s) => s.toFixed(1)).join(" ");
        console.log(
          `stalled reader: origin stopped after ${(sentAtStall / MiB).toFixed(1)} MiB ` +
            `(windows full in ${filled.toFixed(1)} s); client RSS ${before.toFixed(1)} MiB ` +
            `before, ${atStall.toFixed(1)} MiB at the stall, then ${figures} MiB; ` +
            `the origin sent ${sentGrowth} more bytes meanwhile`,
        );
        const peak = Math.max(...samples);
        assert(peak - atStall < 64, `RSS grew ${(peak - atStall).toFixed(1)} MiB while stalled`);
        const tail = samples.slice(-4);
        assert(
          Math.max(...tail) - Math.min(...tail) < 16,
          `RSS not flat at the end: ${tail.join(" ")}`,
        );
        assert(sentGrowth < 4 * MiB, `the origin kept sending: ${sentGrowth} bytes`);
        // Reading again resumes the same connection.
        Deno.kill(curlPid, "SIGCONT");
        const resumedFrom = sent();
        const t1 = performance.now();
        while (sent() < resumedFrom + 32 * MiB && performance.now() - t1 < 20_000) await sleep(100);
        assert(sent() >= resumedFrom + 32 * MiB, `no progress after SIGCONT: ${sent()}`);
        Deno.kill(curlPid, "SIGKILL");
        await reader.status;
        reader = null;
        // Its kernel resets the connection (FIN first when it had read everything): the reset
        // travels to the origin, which stops instead of feeding a stream nobody reads.
        await endless.waitFor(/^closed 0 /, 10_000);
        // And the client serves a new request.
        const r = await sh(tb, tb.client, `curl -sS -m 20 ${URL4}/bytes/${4 * MiB} | sha256sum`);
        assertEquals(r.out.split(" ")[0], await sha256Hex(payload(4 * MiB, 1)), r.err);
      });
    } finally {
      if (reader) {
        try {
          (reader as Deno.ChildProcess).kill("SIGKILL");
        } catch {
          // already gone
        }
        await (reader as Deno.ChildProcess).status;
      }
      await endless.stop();
      await tb.close();
    }
  },
});
