/**
 * Active probing while a transfer runs: 10,000 random, truncated, bit-flipped
 * and replayed datagrams at the server. The transfer must complete intact, the
 * server must not answer any of them, and nothing may crash.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { prng } from "../support/simnet.ts";
import {
  curl,
  payload,
  sha256Hex,
  startClient,
  startOrigin,
  startServer,
} from "../support/daemons.ts";
import { UdpTap } from "../support/udp_tap.ts";

const MiB = 1024 * 1024;

Deno.test({
  name: "e2e: 10,000 probe datagrams during a transfer get no answer and harm nothing",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const server = await startServer();
    const tap = new UdpTap(server.port);
    const link = server.link.replace(/@[^?#]+/, `@127.0.0.1:${tap.port}`);
    const client = await startClient(link);
    const prober = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const answers: Uint8Array[] = [];
    const listening = (async () => {
      try {
        for (;;) answers.push((await prober.receive())[0]);
      } catch {
        // closed
      }
    })();
    const tmp = await Deno.makeTempFile();
    try {
      const size = 32 * MiB;
      const body = payload(size, 5);
      origin.cache.set(`${size}:5`, body);
      const transfer = curl([
        "--socks5-hostname",
        `127.0.0.1:${client.proxyPort}`,
        "-o",
        tmp,
        `http://127.0.0.1:${origin.port}/bytes/${size}?seed=5`,
      ]);
      // Let real traffic flow so there is something to replay and mutate.
      // Only packets the server has long processed (or whose content was long
      // re-sent) are replayed, so a replay is never the session's newest packet.
      const oldEnough = () => {
        const limit = performance.now() - 300;
        let n = 0;
        while (n < tap.upstreamAt.length && tap.upstreamAt[n] < limit) n++;
        return n;
      };
      while (oldEnough() < 50) await new Promise((r) => setTimeout(r, 20));
      let transferDone = false;
      transfer.then(() => (transferDone = true));
      await new Promise((r) => setTimeout(r, 0));
      assert(!transferDone, "the spray starts while the transfer runs");
      const rand = prng(99);
      const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: server.port };
      const captured = () => tap.upstream[Math.floor(rand() * oldEnough())];
      const kinds = [0, 0, 0, 0];
      for (let i = 0; i < 10_000; i++) {
        const kind = i % 4;
        kinds[kind]++;
        let d: Uint8Array;
        if (kind === 0) {
          d = crypto.getRandomValues(new Uint8Array(1 + Math.floor(rand() * 1400)));
        } else if (kind === 1) {
          const c = captured();
          d = c.slice(0, Math.floor(rand() * c.length));
        } else if (kind === 2) {
          d = captured().slice();
          const bit = Math.floor(rand() * d.length * 8);
          d[bit >> 3] ^= 1 << (bit & 7);
        } else {
          d = captured().slice(); // verbatim replay, including the handshake
        }
        await prober.send(d, to);
        if (i % 200 === 0) await new Promise((r) => setTimeout(r, 1));
      }
      const r = await transfer;
      assertEquals(r.code, 0, r.stderr);
      assertEquals(await sha256Hex(await Deno.readFile(tmp)), await sha256Hex(body));
      await new Promise((r) => setTimeout(r, 300));
      assertEquals(answers.length, 0, "the server answered a prober");
      assert(await server.daemon.alive(), "server survived");
      assert(await client.daemon.alive(), "client survived");
      assertEquals(kinds, [2500, 2500, 2500, 2500]);
    } finally {
      prober.close();
      await listening;
      await client.daemon.stop();
      await tap.close();
      await server.daemon.stop();
      await origin.close();
      await Deno.remove(tmp);
    }
  },
});
