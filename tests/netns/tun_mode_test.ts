/**
 * TUN mode end to end, with the daemons as users run them: `ostp-client
 * <link> --tun` in the client namespace, whose only way to the origin's
 * namespace is the tunnel (a point-to-point veth to the server, no route
 * beyond it, no forwarding). Kernel-TCP curl reaches the origin through the
 * TUN, names resolve through the tunnel (dnsmasq beside the origin), a
 * refused port fails at once, ping is answered; a capture on the client's
 * physical side shows nothing but the tunnel's UDP; a clean stop and a
 * SIGKILL followed by `ostp-client down` both leave rules, routes and the
 * resolver exactly as before.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { payload, sha256Hex } from "../support/daemons.ts";
import { ADDR, canUseNetns, run, Testbed } from "../support/netns.ts";
import { startTunnel } from "../support/tunnel_bed.ts";
import { which } from "../support/sh.ts";
import { type Dnsmasq, startDnsmasq } from "../support/dnsmasq.ts";

const enabled = await canUseNetns() && !!(await which("curl")) &&
  !!(await which("dnsmasq")) && !!(await which("tcpdump"));
if (!enabled) {
  console.log("SKIPPED netns TUN mode tests: need root, ip netns, curl, dnsmasq, tcpdump");
}

const MiB = 1024 * 1024;
const dec = new TextDecoder();

async function snapshot(tb: Testbed, resolv: string): Promise<string> {
  const parts = [];
  for (
    const a of [
      ["rule"],
      ["-6", "rule"],
      ["route", "show", "table", "all"],
      ["-6", "route", "show", "table", "all"],
      ["link"],
    ]
  ) {
    // The veth's own IPv6 link-local address comes up on the kernel's schedule (DAD):
    // not ours, so not compared.
    const lines = (await run("ip", "-n", tb.client, ...a)).split("\n");
    parts.push(lines.filter((l) => !/ fe80::[0-9a-f:]+ dev /.test(l)).join("\n"));
  }
  parts.push(await Deno.readTextFile(resolv));
  return parts.join("\n");
}

async function sh(tb: Testbed, ns: string, script: string) {
  const r = await tb.exec(ns, "sh", ["-c", script]);
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test({
  name: "netns: --tun carries kernel TCP and DNS through the tunnel, leaks nothing, undoes itself",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const tb = await Testbed.createVeth();
    const etc = `/etc/netns/${tb.client}`;
    const dir = await Deno.makeTempDir({ prefix: "ostp-tunmode-" });
    const cfg = `${dir}/client.json`;
    let dnsmasq: Dnsmasq | null = null;
    try {
      // The client namespace's own resolver file (ip netns exec mounts it over /etc/resolv.conf).
      await Deno.mkdir(etc, { recursive: true });
      const resolv = `${etc}/resolv.conf`;
      await Deno.writeTextFile(resolv, "nameserver 192.0.2.53\n");
      await Deno.writeTextFile(
        cfg,
        JSON.stringify({
          tun: { stateDir: `${dir}/state`, dns: { upstream: `${ADDR.target}:53` } },
        }),
      );
      dnsmasq = startDnsmasq({
        netns: tb.target,
        address: ADDR.target,
        records: [`--host-record=origin.test,${ADDR.target}`],
      });
      const before = await snapshot(tb, resolv);
      const bed = await startTunnel(tb, { clientArgs: ["-c", cfg, "--tun"] });
      try {
        await bed.client.waitFor(/tun ostp0 up/, 20_000);
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
            // The physical side: anything but the tunnel's own UDP is a leak — except the
            // kernel's ARP and its link-scoped IPv6 chatter (MLD to ff02::/16, neighbour
            // discovery between link-local addresses), which cannot leave the link.
            `not (udp and host ${ADDR.server} and port 8443) and not arp ` +
            "and not (ip6 and (dst net ff02::/16 or (src net fe80::/10 and dst net fe80::/10)))",
          ],
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        // Let tcpdump attach before traffic starts.
        await new Promise((r) => setTimeout(r, 1000));
        const url = `http://${ADDR.target}:8080`;
        const down = await sh(
          tb,
          tb.client,
          `curl -sS -m 120 ${url}/bytes/${64 * MiB} | sha256sum`,
        );
        assertEquals(down.out.split(" ")[0], await sha256Hex(payload(64 * MiB, 1)), down.err);
        const file = `${dir}/up.bin`;
        await Deno.writeFile(file, payload(64 * MiB, 5));
        const up = await sh(tb, tb.client, `curl -sS -m 120 --data-binary @${file} ${url}/upload`);
        assertEquals(up.out.trim(), `${64 * MiB} ${await sha256Hex(payload(64 * MiB, 5))}`, up.err);
        const many = await sh(
          tb,
          tb.client,
          `seq 200 | xargs -P 200 -I{} curl -sS -m 60 -o /dev/null -w '%{http_code}\\n' ` +
            `${url}/bytes/65536 | sort | uniq -c`,
        );
        assertEquals(many.out.trim(), "200 200", many.err);
        const named = await sh(tb, tb.client, "curl -sS -m 20 http://origin.test:8080/hello");
        assertEquals(named.out, "hello\n", `name through the tunnel: ${named.err}`);
        const t0 = performance.now();
        const refused = await sh(tb, tb.client, `curl -sS -m 10 http://${ADDR.target}:9/`);
        assertEquals(refused.code, 7, refused.err);
        assert(performance.now() - t0 < 5000, "a refused port fails at once");
        if (await which("ping")) {
          const ping = await sh(tb, tb.client, `ping -c 2 -W 2 ${ADDR.target}`);
          assertEquals(ping.code, 0, ping.out + ping.err);
        }
        // IPv6 and DNS to an outside resolver go into the TUN too, never around it.
        await sh(tb, tb.client, "curl -sS -m 5 -g 'http://[2001:db8:99::1]:8080/' || true");
        await sh(
          tb,
          tb.client,
          "bash -c 'echo q > /dev/udp/192.0.2.99/53; echo q > /dev/udp/192.0.2.99/5353' || true",
        );
        // Nothing but the tunnel's UDP left on the physical side.
        await new Promise((r) => setTimeout(r, 500));
        cap.kill("SIGINT");
        const capOut = await cap.output();
        const leaked = dec.decode(capOut.stdout).trim();
        assertEquals(leaked, "", `packets outside the tunnel:\n${leaked}`);
        const counted = dec.decode(capOut.stderr);
        assert(/0 packets captured/.test(counted), counted);
      } finally {
        // A clean stop undoes everything.
        await bed.stop();
      }
      assertEquals(await snapshot(tb, resolv), before, "clean exit restores the host");

      // A crash: the next `ostp-client down` undoes the leftovers.
      const again = await startTunnel(tb, { clientArgs: ["-c", cfg, "--tun"] });
      try {
        await again.client.waitFor(/tun ostp0 up/, 20_000);
        await again.client.stop("SIGKILL");
        const left = await snapshot(tb, resolv);
        assert(left !== before && left.includes("7331"), "the crash left its rules");
        const downCmd = await tb.exec(tb.client, Deno.execPath(), [
          "run",
          "-A",
          new URL("../../client/main.ts", import.meta.url).pathname,
          "down",
          "--state-dir",
          `${dir}/state`,
        ]);
        assertEquals(downCmd.code, 0, dec.decode(downCmd.stderr));
        assertEquals(await snapshot(tb, resolv), before, "down restores the host after a crash");
      } finally {
        await again.stop();
      }
    } finally {
      await dnsmasq?.stop();
      await tb.close();
      await Deno.remove(etc, { recursive: true }).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
