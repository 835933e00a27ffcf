/**
 * A server with two worker threads (docs/workers.md): sessions land on both
 * (source ports hash over the SO_REUSEPORT group), transfers stay
 * byte-exact, the API's counters, users and kick span the workers, a hello
 * replayed from other addresses is refused whichever worker it reaches, and a
 * client that hops to source ports hashing to the other worker keeps its
 * session (forwarded between the workers) and its transfer.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  type ClientHandle,
  curl,
  type Daemon,
  freePort,
  payload,
  sha256Hex,
  spawnDeno,
  startClient,
  startOrigin,
} from "../support/daemons.ts";
import { encodeShareLink } from "../../shared/link.ts";
import {
  deriveSecrets,
  formatAccessKey,
  generateAccessKey,
  Masker,
} from "../../shared/crypto/keys.ts";
import { buildClientHello, readServerHello } from "../../shared/session/handshake.ts";
import { parseServerConfig } from "../../shared/config/server_config.ts";
import { OstpServer } from "../../server/server.ts";

const TOKEN = "workers-test-token-" + crypto.randomUUID();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const PARAMS = { maxData: 1 << 24, maxStreamData: 1 << 22, maxStreams: 100, maxDatagramSize: 1350 };

/** A server with `--workers 2`, users alice and bob, and the API. */
async function startWorkersServer(): Promise<{
  server: Daemon;
  port: number;
  keys: { alice: Uint8Array; bob: Uint8Array };
  api: (method: string, path: string) => Promise<{ status: number; json: () => any }>;
  file: string;
}> {
  const port = freePort("udp");
  const apiPort = freePort("tcp");
  const keys = { alice: generateAccessKey(), bob: generateAccessKey() };
  const file = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(
    file,
    JSON.stringify({
      listen: [`127.0.0.1:${port}`],
      users: [
        { name: "alice", key: formatAccessKey(keys.alice, "hex") },
        { name: "bob", key: formatAccessKey(keys.bob, "hex") },
      ],
      api: { listen: `127.0.0.1:${apiPort}`, token: TOKEN },
    }),
  );
  const server = spawnDeno("server", "server/main.ts", ["--config", file, "--workers", "2"]);
  await server.waitFor(/management API on/);
  await server.waitFor(/^ready: /);
  const api = async (method: string, path: string) => {
    const r = await fetch(`http://127.0.0.1:${apiPort}${path}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const text = await r.text();
    return { status: r.status, json: () => JSON.parse(text) };
  };
  return { server, port, keys, api, file };
}

function link(key: Uint8Array, port: number, name: string): string {
  return encodeShareLink({ key, server: { host: "127.0.0.1", port }, name });
}

async function download(client: ClientHandle, originPort: number, size: number, seed: number) {
  const r = await curl([
    "--socks5-hostname",
    `127.0.0.1:${client.proxyPort}`,
    `http://127.0.0.1:${originPort}/bytes/${size}?seed=${seed}`,
  ]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(r.stdout.length, size);
  assertEquals(await sha256Hex(r.stdout), await sha256Hex(payload(size, seed)));
}

Deno.test({
  name: "e2e workers: sessions on both workers, exact transfers, API, kick, replayed hello",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const { server, port, keys, api, file } = await startWorkersServer();
    const clients: { c: ClientHandle; user: "alice" | "bob" }[] = [];
    try {
      // Clients (each its own process, so its own source port) until both workers own some.
      let sessions: any[] = [];
      for (let i = 0; i < 8; i++) {
        const user = i % 2 === 0 ? "alice" : "bob";
        clients.push({ c: await startClient(link(keys[user], port, user)), user });
        if (clients.length < 3) continue;
        sessions = (await api("GET", "/api/v1/sessions")).json().sessions;
        if (new Set(sessions.map((s) => s.worker)).size === 2) break;
      }
      assertEquals(sessions.length, clients.length, JSON.stringify(sessions));
      assertEquals(
        new Set(sessions.map((s) => s.worker)),
        new Set([0, 1]),
        `both workers own sessions: ${JSON.stringify(sessions)}`,
      );

      // Byte-exact transfers through every client, down and up.
      const size = 3 * 1024 * 1024;
      await Promise.all(clients.map(({ c }, i) => download(c, origin.port, size, 10 + i)));
      const up = payload(1024 * 1024, 77);
      const upFile = await Deno.makeTempFile();
      await Deno.writeFile(upFile, up);
      const posted = await curl([
        "--socks5-hostname",
        `127.0.0.1:${clients[1].c.proxyPort}`,
        "--data-binary",
        `@${upFile}`,
        `http://127.0.0.1:${origin.port}/upload`,
      ]);
      await Deno.remove(upFile);
      assertEquals(new TextDecoder().decode(posted.stdout), `${up.length} ${await sha256Hex(up)}`);

      // Counters across the workers.
      const status = (await api("GET", "/api/v1/status")).json();
      assertEquals(status.sessions, clients.length);
      assertEquals(status.handshakes, clients.length);
      assertEquals(status.workers.length, 2);
      assert(status.workers.every((w: any) => w.sessions > 0), JSON.stringify(status.workers));
      assert(status.bytesSent > clients.length * size, JSON.stringify(status));
      const users = (await api("GET", "/api/v1/users")).json().users;
      for (const name of ["alice", "bob"]) {
        const u = users.find((x: any) => x.name === name);
        const mine = clients.filter((c) => c.user === name).length;
        assertEquals(u.liveSessions, mine, JSON.stringify(u));
        assertEquals(u.sessions, mine, JSON.stringify(u));
        assert(u.streams >= mine + (name === "bob" ? 1 : 0), JSON.stringify(u));
        assert(u.bytesDown >= mine * size, JSON.stringify(u));
      }
      const bob = users.find((x: any) => x.name === "bob");
      assert(bob.bytesUp >= up.length, JSON.stringify(bob));

      // A hello replayed from other addresses is refused on whichever worker it lands.
      const secrets = deriveSecrets(keys.alice);
      const masker = new Masker(secrets.obfsKey);
      const hello = buildClientHello(secrets, masker, PARAMS, Date.now());
      const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port };
      const first = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
      await first.send(hello.datagram, to);
      const [reply] = await first.receive();
      assert(readServerHello(hello, masker, reply) !== null, "the original hello is answered");
      const sid = hello.sessionId.toString(16).padStart(8, "0");
      const before = (await api("GET", "/api/v1/status")).json();
      const owner = (await api("GET", "/api/v1/sessions")).json().sessions
        .find((s: any) => s.id === sid).worker;
      const replays = Array.from(
        { length: 10 },
        () => Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 }),
      );
      let answered = 0;
      const listening = replays.map(async (s) => {
        try {
          await s.receive();
          answered++;
        } catch {
          // closed
        }
      });
      for (const s of replays) await s.send(hello.datagram, to);
      await sleep(500);
      for (const s of replays) s.close();
      first.close();
      await Promise.all(listening);
      assertEquals(answered, 0, "no replay is answered");
      const after = (await api("GET", "/api/v1/status")).json();
      assertEquals(after.drops.replayedHandshake - before.drops.replayedHandshake, 10);
      assertEquals(after.handshakes, before.handshakes);
      const other = after.workers.find((w: any) => w.index !== owner);
      const otherBefore = before.workers.find((w: any) => w.index !== owner);
      // 10 source ports all hashing to the owner: about 1 in 1000.
      assert(
        other.drops.replayedHandshake > otherBefore.drops.replayedHandshake,
        `a replay reached the other worker: ${JSON.stringify(after.workers)}`,
      );

      // Kick a session of each worker: gone from the list at once, reason logged by the client.
      for (const w of [0, 1]) {
        const list = (await api("GET", "/api/v1/sessions")).json().sessions;
        const victim = list.find((s: any) => s.worker === w && s.id !== sid);
        const r = await api("DELETE", `/api/v1/sessions/${victim.id}`);
        assertEquals(r.status, 200);
        const now = (await api("GET", "/api/v1/sessions")).json().sessions;
        assert(!now.some((s: any) => s.id === victim.id), `kicked ${victim.id} is gone`);
      }
      // The kicked clients reconnect (new sessions) and still transfer exactly.
      for (let i = 0; i < 40; i++) {
        const n = (await api("GET", "/api/v1/status")).json().sessions;
        if (n >= clients.length + 1) break;
        await sleep(250);
      }
      await Promise.all(clients.map(({ c }, i) => download(c, origin.port, 200_000, 50 + i)));
      const final = (await api("GET", "/api/v1/status")).json();
      assertEquals(final.sessions, clients.length + 1, "every client is back, plus the test's one");
    } finally {
      for (const { c } of clients) await c.daemon.stop();
      await server.stop();
      await origin.close();
      await Deno.remove(file);
    }
  },
});

Deno.test({
  name: "e2e workers: a client hopping to the other worker keeps its session and transfer",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const { server, port, keys, api, file } = await startWorkersServer();
    let client: ClientHandle | undefined;
    const tmp = await Deno.makeTempFile();
    try {
      client = await startClient(link(keys.alice, port, "alice"), ["--keepalive", "1"]);
      const [session] = (await api("GET", "/api/v1/sessions")).json().sessions;
      const size = 24 * 1024 * 1024;
      const transfer = curl([
        "--limit-rate",
        "3M",
        "--socks5-hostname",
        `127.0.0.1:${client.proxyPort}`,
        "-o",
        tmp,
        `http://127.0.0.1:${origin.port}/bytes/${size}?seed=5`,
      ]);
      await sleep(800);
      // New source ports until one hashes to the worker that does not own the session.
      let forwarded = 0;
      for (let hop = 0; hop < 20 && forwarded === 0; hop++) {
        const from = client.daemon.output.length;
        client.daemon.signal("SIGUSR2");
        await client.daemon.waitFor(/moved 1 session/, 10_000, from);
        await sleep(500);
        forwarded = (await api("GET", "/api/v1/status")).json().forwarded;
      }
      assert(forwarded > 0, "some datagrams were forwarded between the workers");
      const r = await transfer;
      assertEquals(r.code, 0, r.stderr);
      const got = await Deno.readFile(tmp);
      assertEquals(got.length, size);
      assertEquals(await sha256Hex(got), await sha256Hex(payload(size, 5)));
      const status = (await api("GET", "/api/v1/status")).json();
      assertEquals(status.handshakes, 1, "no new handshake");
      const now = (await api("GET", "/api/v1/sessions")).json().sessions;
      assertEquals(now.map((s: any) => s.id), [session.id], "the same session");
      assert(status.migrations >= 1, JSON.stringify(status));
    } finally {
      await client?.daemon.stop();
      await server.stop();
      await origin.close();
      await Deno.remove(file);
      await Deno.remove(tmp);
    }
  },
});

Deno.test({
  name: "e2e workers (library): a worker that dies is replaced; its client reconnects",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const key = generateAccessKey();
    const config = parseServerConfig({
      listen: ["127.0.0.1:0"],
      keys: [formatAccessKey(key, "hex")],
      egress: { allow: ["127.0.0.0/8"] },
      log: { level: "warning" },
    });
    // Injected functions cannot cross into workers: one worker, in process.
    const injected = new OstpServer(config, { workers: 2, lookup: () => Promise.resolve([]) });
    assertEquals(injected.workerCount, 1);
    const server = new OstpServer(config, { workers: 2 });
    assertEquals(server.workerCount, 2);
    await server.start();
    let client: ClientHandle | undefined;
    try {
      const port = server.addresses[0].port;
      client = await startClient(link(key, port, "k"), ["--keepalive", "1"]);
      await download(client, origin.port, 500_000, 3);
      const backend = server.apiBackend();
      const [first] = await backend.sessions();
      await server.workerPool!.crashForTest(first.worker);
      assertEquals((await backend.sessions()).length, 0, "its sessions are forgotten");
      let again: any[] = [];
      for (let i = 0; i < 120 && again.length === 0; i++) {
        await sleep(250);
        again = await backend.sessions();
      }
      assertEquals(again.length, 1, "the client reconnected");
      assert(again[0].id !== first.id, "with a new session");
      await download(client, origin.port, 500_000, 4);
    } finally {
      await client?.daemon.stop();
      await server.stop();
      await origin.close();
    }
  },
});
