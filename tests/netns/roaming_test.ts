/**
 * Roaming and parallel sessions on the emulated link: the client's source
 * port and then its source IP change mid-transfer with no new handshake; with
 * `mux 3`, losing one session's path loses no other session's flows.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { payload, sha256Hex } from "../support/daemons.ts";
import { ADDR, canUseNetns, run, Testbed } from "../support/netns.ts";
import { startTunnel } from "../support/tunnel_bed.ts";

const MiB = 1024 * 1024;
const enabled = await canUseNetns();
if (!enabled) console.log("SKIPPED netns roaming tests: need root, ip netns and /dev/net/tun");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test({
  name: "netns: transfer survives a new source port and a new source IP, no new handshake",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const tb = await Testbed.create({ delayMs: 10 }, { delayMs: 10 }, 5);
    const bed = await startTunnel(tb, { clientArgs: ["--keepalive", "1"] });
    const tmp = await Deno.makeTempFile();
    try {
      const size = 48 * MiB;
      const transfer = tb.exec(tb.client, "curl", [
        "-sS",
        "--limit-rate",
        "12M",
        "--socks5-hostname",
        `127.0.0.1:${bed.proxyPort}`,
        "-o",
        tmp,
        `http://${ADDR.target}:8080/bytes/${size}?seed=9`,
      ]);
      await sleep(1000);
      bed.client.signal("SIGUSR2"); // new UDP socket: new source port
      await bed.client.waitFor(/moved 1 session/);
      await sleep(1000);
      // New source IP: the client host gets a second address and uses it.
      const dev =
        (await run("ip", "-n", tb.client, "-o", "link", "show")).match(/\d+: (oc[0-9a-f]+)/)![1];
      await run("ip", "-n", tb.client, "addr", "add", "10.201.0.3/32", "dev", dev);
      await run(
        "ip",
        "-n",
        tb.client,
        "route",
        "replace",
        `${ADDR.server}/32`,
        "dev",
        dev,
        "src",
        "10.201.0.3",
      );
      const sdev =
        (await run("ip", "-n", tb.server, "-o", "link", "show")).match(/\d+: (os[0-9a-f]+)/)![1];
      await run("ip", "-n", tb.server, "route", "add", "10.201.0.3/32", "dev", sdev);
      const r = await transfer;
      assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
      assertEquals(await sha256Hex(await Deno.readFile(tmp)), await sha256Hex(payload(size, 9)));
      const stats = (await bed.server.statsDump()).stats;
      assertEquals(stats.handshakes, 1, "no new handshake");
      assert(stats.migrations >= 2, `the session moved twice (migrations ${stats.migrations})`);
      assertEquals(bed.client.count(/connected to/), 1, "the client never reconnected");
    } finally {
      await bed.stop();
      await tb.close();
      await Deno.remove(tmp);
    }
  },
});

Deno.test({
  name: "netns: mux 3 spreads flows; a session losing its path moves, no flow lost or disturbed",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const tb = await Testbed.create({ delayMs: 5 }, { delayMs: 5 }, 6);
    const bed = await startTunnel(tb, {
      clientArgs: ["--mux", "3", "--keepalive", "1", "--idle-timeout", "3"],
    });
    const tmp = await Deno.makeTempDir();
    try {
      await bed.client.waitFor(/session 2 connected/);
      await bed.client.waitFor(/session 1 connected/);
      // Larger than everything that can sit between the server and a slow reader when the path
      // is cut: the stream's receive window (8 MiB) plus both loopback TCP buffers between the
      // client daemon and curl (autotuned to several MiB each). With 16 MiB a flow could be
      // wholly at the client before the cut and succeed (seen: 9 of 9 intact).
      const size = 48 * MiB;
      const flows = Array.from({ length: 9 }, (_, i) =>
        tb.exec(tb.client, "curl", [
          "-sS",
          "-m",
          "60",
          "--limit-rate",
          "4M",
          "--socks5-hostname",
          `127.0.0.1:${bed.proxyPort}`,
          "-o",
          `${tmp}/f${i}`,
          `http://${ADDR.target}:8080/bytes/${size}?seed=${i + 20}`,
        ]));
      await sleep(1500);
      const stats = (await bed.server.statsDump()).stats;
      assertEquals(stats.sessions, 3, "three sessions at the server");
      assertEquals(stats.streams, 9, "nine flows in flight");
      // Which session carries how many flows, and on which port, right now: a busy
      // machine can make a session briefly take no new streams, so the spread need
      // not be 3/3/3; cut the session with the most flows.
      const sessions = (await bed.client.statsDump()).sessions as {
        index: number;
        state: string;
        localPort: number;
        streams: number;
      }[];
      assertEquals(sessions.reduce((n, s) => n + s.streams, 0), 9, JSON.stringify(sessions));
      const cut = sessions.reduce((a, b) => (b.streams > a.streams ? b : a));
      assert(cut.streams >= 3 && cut.localPort > 0, JSON.stringify(sessions));
      const port = cut.localPort;
      const cutAt = bed.client.output.length;
      // Cut that session's path: drop its UDP source port in the client namespace.
      await run(
        "ip",
        "netns",
        "exec",
        tb.client,
        "nft",
        "add table inet cut; add chain inet cut out { type filter hook output priority 0; }; " +
          `add rule inet cut out udp sport ${port} drop`,
      );
      const results = await Promise.all(flows);
      let ok = 0;
      for (let i = 0; i < 9; i++) {
        if (results[i].code !== 0) continue;
        assertEquals(
          await sha256Hex(await Deno.readFile(`${tmp}/f${i}`)),
          await sha256Hex(payload(size, i + 20)),
          `flow ${i} intact`,
        );
        ok++;
      }
      // The cut session's silent server is probed over the new handshake's fresh socket too:
      // it answers there, and the session moves (no new handshake), its flows intact.
      assertEquals(ok, 9, "every flow intact");
      await bed.client.waitFor(
        new RegExp(
          `session ${cut.index}: the server answers on a new udp path ` +
            `\\(local port (?!${port}\\b)\\d+\\), same session`,
        ),
        30_000,
        cutAt,
      );
      // The hello sent beside it was answered too; that session is closed as superseded.
      assertEquals(
        bed.client.count(new RegExp(`session ${cut.index} connected to`)),
        1,
        "the cut session was never replaced",
      );
      const after = (await bed.server.statsDump()).stats;
      assert(after.migrations >= 1, `the session moved (migrations ${after.migrations})`);
      // Only the cut session noticed anything.
      const others = sessions.filter((s) => s.index !== cut.index).map((s) => s.index);
      const later = bed.client.output.slice(cutAt);
      for (const i of others) {
        const re = new RegExp(`session ${i}\\b.*(stopped answering|connecting)`);
        assertEquals(later.filter((l) => re.test(l)), [], `session ${i} was not disturbed`);
      }
    } finally {
      await bed.stop();
      await tb.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
