/**
 * Probing a live server, counted with a packet capture on the server's side:
 * random datagrams, truncated and bit-flipped real packets, a replayed real
 * handshake, authentic handshakes outside the ±300 s window, and a flood of
 * handshakes under a wrong key far above the rate limit. The server must send
 * nothing to any prober, the live session must be unharmed, memory bounded.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  curl,
  payload,
  sha256Hex,
  startClient,
  startOrigin,
  startServer,
} from "../support/daemons.ts";
import { UdpTap } from "../support/udp_tap.ts";
import { decodeShareLink } from "../../shared/link.ts";
import { deriveSecrets, generateAccessKey, Masker } from "../../shared/crypto/keys.ts";
import { buildClientHello } from "../../shared/session/handshake.ts";
import { prng } from "../support/simnet.ts";

const MiB = 1024 * 1024;
const hasTcpdump = await new Deno.Command("tcpdump", {
  args: ["--version"],
  stdout: "null",
  stderr: "null",
})
  .output().then((o) => o.success).catch(() => false);
const canCapture = hasTcpdump && Deno.uid() === 0;
if (!canCapture) console.log("SKIPPED capture test: needs root and tcpdump");

const PARAMS = { maxData: 1 << 24, maxStreamData: 1 << 22, maxStreams: 100, maxDatagramSize: 1350 };

Deno.test({
  name: "e2e: probes get no answer on the wire; the live session is unharmed",
  ignore: !canCapture,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const server = await startServer();
    const tap = new UdpTap(server.port);
    const client = await startClient(server.link.replace(/@[^?#]+/, `@127.0.0.1:${tap.port}`));
    const pcap = await Deno.makeTempFile({ suffix: ".pcap" });
    const dump = new Deno.Command("tcpdump", {
      args: ["-i", "lo", "-n", "-U", "-w", pcap, `udp and src port ${server.port}`],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const dumpErr = dump.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let banner = "";
    while (!/listening on/.test(banner)) banner += (await dumpErr.read()).value ?? "";
    const probers = Array.from(
      { length: 5 },
      () => Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 }),
    );
    const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: server.port };
    const tmp = await Deno.makeTempFile();
    try {
      const before = await server.daemon.statsDump();
      const size = 32 * MiB;
      origin.cache.set(`${size}:4`, payload(size, 4));
      const transfer = curl([
        "--socks5-hostname",
        `127.0.0.1:${client.proxyPort}`,
        "-o",
        tmp,
        `http://127.0.0.1:${origin.port}/bytes/${size}?seed=4`,
      ]);
      while (tap.upstream.length < 40) await new Promise((r) => setTimeout(r, 20));
      const rand = prng(7);
      const captured = () => tap.upstream[1 + Math.floor(rand() * 30)];
      const key = decodeShareLink(server.link).key;
      const secrets = deriveSecrets(key);
      const masker = new Masker(secrets.obfsKey);
      const wrong = deriveSecrets(generateAccessKey());
      const wrongMasker = new Masker(wrong.obfsKey);
      let sent = 0;
      const send = async (p: Deno.DatagramConn, d: Uint8Array) => {
        await p.send(d, to);
        if (++sent % 100 === 0) await new Promise((r) => setTimeout(r, 2));
      };
      for (let i = 0; i < 2000; i++) {
        await send(
          probers[0],
          crypto.getRandomValues(new Uint8Array(1 + Math.floor(rand() * 1400))),
        );
      }
      for (let i = 0; i < 2000; i++) {
        const c = captured().slice();
        if (i % 2) {
          const bit = Math.floor(rand() * c.length * 8);
          c[bit >> 3] ^= 1 << (bit & 7);
          await send(probers[1], c);
        } else {
          await send(probers[1], c.subarray(0, Math.floor(rand() * c.length)));
        }
      }
      // Stale hellos before the replays: each framed hello takes a handshake token (burst 400)
      // before its timestamp is read, so 500 replays first would leave none for them to be
      // counted as stale rather than rate-limited.
      for (let i = 0; i < 200; i++) {
        const skew = (i % 2 ? 1 : -1) * (301_000 + i * 1000);
        await send(
          probers[3],
          buildClientHello(secrets, masker, PARAMS, Date.now() + skew).datagram,
        );
      }
      for (let i = 0; i < 500; i++) await send(probers[2], tap.upstream[0]); // the real hello
      for (let i = 0; i < 5000; i++) {
        await send(probers[4], buildClientHello(wrong, wrongMasker, PARAMS, Date.now()).datagram);
      }
      const r = await transfer;
      assertEquals(r.code, 0, r.stderr);
      assertEquals(await sha256Hex(await Deno.readFile(tmp)), await sha256Hex(payload(size, 4)));
      await new Promise((r) => setTimeout(r, 500));
      const after = await server.daemon.statsDump();
      // Read the capture: every datagram the server sent, and where to.
      dump.kill("SIGINT");
      await dump.status;
      const read = await new Deno.Command("tcpdump", {
        args: ["-n", "-r", pcap],
        stdout: "piped",
        stderr: "null",
      })
        .output();
      const lines = new TextDecoder().decode(read.stdout).split("\n").filter((l) =>
        l.includes(" > ")
      );
      const destinations = new Set(lines.map((l) => Number(l.match(/ > [\d.]+\.(\d+):/)![1])));
      assert(
        lines.length > 1000,
        `the capture saw the session's traffic (${lines.length} datagrams)`,
      );
      assertEquals([...destinations], [tap.backPort], "the server sent only to the real client");
      const drops = after.stats.drops;
      const dropped = Object.values(drops as Record<string, number>).reduce((a, b) => a + b, 0);
      assert(dropped >= 2000 + 1000 + 500 + 200, `drops counted: ${JSON.stringify(drops)}`);
      assert(drops.staleTimestamp > 0, `stale hellos counted: ${drops.staleTimestamp}`);
      assert(drops.replayedHandshake > 0, `replayed hellos counted: ${drops.replayedHandshake}`);
      assertEquals(after.stats.handshakes, 1, "no prober got a session");
      const growth = (after.rssBytes - before.rssBytes) / MiB;
      console.log(
        `  server RSS ${(before.rssBytes / MiB).toFixed(1)} → ${
          (after.rssBytes / MiB).toFixed(1)
        } MiB ` +
          `after ${sent} probes and a ${size / MiB} MiB transfer; drops ${JSON.stringify(drops)}`,
      );
      assert(growth < 96, `memory stays bounded (grew ${growth.toFixed(1)} MiB)`);
      assertEquals(client.daemon.count(/connected to/), 1, "the live session was never disturbed");
    } finally {
      for (const p of probers) p.close();
      try {
        dump.kill("SIGINT");
      } catch {
        // already stopped
      }
      await dump.status;
      await dumpErr.cancel();
      await client.daemon.stop();
      await tap.close();
      await server.daemon.stop();
      await origin.close();
      await Deno.remove(tmp);
      await Deno.remove(pcap);
    }
  },
});
