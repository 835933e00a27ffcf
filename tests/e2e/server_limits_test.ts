/**
 * The real server process under limits (`--max-sessions 2 --idle-timeout 1`),
 * probed with UDP sockets of our own: random datagrams, a hello under a wrong
 * key, a replayed hello and a hello over the session cap get no answer at all;
 * genuine hellos are answered; idle sessions that never sent a packet are
 * evicted, after which a genuine client connects and carries traffic.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { curl, startClient, startOrigin, startServer } from "../support/daemons.ts";
import { deriveSecrets, generateAccessKey, Masker } from "../../shared/crypto/keys.ts";
import { decodeShareLink } from "../../shared/link.ts";
import {
  buildClientHello,
  type HelloParams,
  readServerHello,
} from "../../shared/session/handshake.ts";

const PARAMS: HelloParams = {
  maxData: 1024 * 1024,
  maxStreamData: 256 * 1024,
  maxStreams: 16,
  maxDatagramSize: 1350,
};

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A UDP socket on loopback that records every datagram it receives. */
class Probe {
  readonly sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  readonly got: Uint8Array[] = [];
  private readonly loop: Promise<void>;

  constructor() {
    this.loop = (async () => {
      try {
        for (;;) this.got.push((await this.sock.receive())[0]);
      } catch {
        // closed
      }
    })();
  }

  async send(d: Uint8Array, port: number): Promise<void> {
    await this.sock.send(d, { transport: "udp", hostname: "127.0.0.1", port });
  }

  /** Waits up to `ms` for the first datagram. */
  async first(ms: number): Promise<Uint8Array | undefined> {
    const end = performance.now() + ms;
    while (this.got.length === 0 && performance.now() < end) await sleep(10);
    return this.got[0];
  }

  async close(): Promise<void> {
    try {
      this.sock.close();
    } catch {
      // already closed
    }
    await this.loop;
  }
}

Deno.test({
  name: "e2e: server limits: probes get no answer, idle slots free, a client still connects",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const server = await startServer([
      "--max-sessions",
      "2",
      "--idle-timeout",
      "1",
      "--log-level",
      "debug",
    ]);
    const origin = startOrigin();
    const key = decodeShareLink(server.link).key;
    const secrets = deriveSecrets(key);
    const masker = new Masker(secrets.obfsKey);
    const noise = new Probe(); // random datagrams and a wrong-key hello
    const genuine1 = new Probe();
    const replayer = new Probe();
    const genuine2 = new Probe();
    const overCap = new Probe();
    const silent = [noise, replayer, overCap];
    let client: Awaited<ReturnType<typeof startClient>> | undefined;
    try {
      // 200 random datagrams of random lengths (0 included).
      for (let i = 0; i < 200; i++) {
        const len = i === 0 ? 0 : Math.floor(Math.random() * 1400);
        await noise.send(crypto.getRandomValues(new Uint8Array(len)), server.port);
        if (i % 50 === 49) await sleep(1);
      }
      // A well-formed hello under a key the server does not have.
      const other = deriveSecrets(generateAccessKey());
      await noise.send(
        buildClientHello(other, new Masker(other.obfsKey), PARAMS, Date.now()).datagram,
        server.port,
      );

      // A genuine hello is answered with a valid message 2 ...
      const h1 = buildClientHello(secrets, masker, PARAMS, Date.now());
      await genuine1.send(h1.datagram, server.port);
      const reply1 = await genuine1.first(3000);
      assert(reply1 !== undefined, "a genuine hello is answered");
      assert(readServerHello(h1, masker, reply1) !== null, "the answer is message 2");
      // ... and the same hello replayed from another address is not.
      await replayer.send(h1.datagram, server.port);
      await replayer.send(h1.datagram, server.port);

      // Fill the table (2 sessions), then one more genuine hello: no answer.
      const h2 = buildClientHello(secrets, masker, PARAMS, Date.now());
      await genuine2.send(h2.datagram, server.port);
      const reply2 = await genuine2.first(3000);
      assert(reply2 !== undefined && readServerHello(h2, masker, reply2) !== null);
      const h3 = buildClientHello(secrets, masker, PARAMS, Date.now());
      await overCap.send(h3.datagram, server.port);

      await sleep(500);
      for (const p of silent) assertEquals(p.got.length, 0, "the server answered a probe");

      // Neither genuine session ever sent a data packet: both are evicted after 1 s idle.
      const evicted = () =>
        server.daemon.output.filter((l) => /closed: idle timeout/.test(l)).length;
      const deadline = performance.now() + 10_000;
      while (evicted() < 2 && performance.now() < deadline) await sleep(50);
      assertEquals(evicted(), 2, "both unconfirmed sessions were evicted");

      // A genuine client now gets a slot and carries traffic.
      client = await startClient(server.link);
      const r = await curl([
        "--socks5-hostname",
        `127.0.0.1:${client.proxyPort}`,
        `http://127.0.0.1:${origin.port}/hello`,
      ]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(new TextDecoder().decode(r.stdout), "hello\n");

      await sleep(300);
      for (const p of silent) assertEquals(p.got.length, 0, "the server answered a probe");
      assert(await server.daemon.alive(), "server survived");
    } finally {
      if (client) await client.daemon.stop();
      await server.daemon.stop();
      await origin.close();
      for (const p of [noise, genuine1, replayer, genuine2, overCap]) await p.close();
    }
  },
});
