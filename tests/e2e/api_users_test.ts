/**
 * User endpoints of the management API on a real server with a state file:
 * create a user (key + link), connect with the link, disable it (the client
 * is told why), reset its counters, restart the server on the same state
 * file (the user is still there and can connect), delete it (its session is
 * kicked), and the error answers.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { curl, freePort, spawnDeno, startClient, startOrigin } from "../support/daemons.ts";
import { decodeShareLink } from "../../shared/link.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

const TOKEN = "api-users-token-" + crypto.randomUUID();

Deno.test({
  name: "e2e: management API users: create, connect, disable, reset, restart, delete, errors",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const port = freePort("udp");
    const apiPort = freePort("tcp");
    const dir = await Deno.makeTempDir();
    const file = `${dir}/server.json`;
    await Deno.writeTextFile(
      file,
      JSON.stringify({
        listen: [`127.0.0.1:${port}`],
        users: [{ name: "alice", key: formatAccessKey(generateAccessKey(), "hex") }],
        stateFile: `${dir}/state.db`,
        statsFlushInterval: 1,
        api: { listen: `127.0.0.1:${apiPort}`, token: TOKEN },
      }),
    );
    const start = async () => {
      const d = spawnDeno("server", "server/main.ts", ["--config", file]);
      await d.waitFor(/management API on/);
      return d;
    };
    const api = async (method: string, path: string, body?: unknown) => {
      const r = await fetch(`http://127.0.0.1:${apiPort}${path}`, {
        method,
        body: body === undefined
          ? undefined
          : typeof body === "string"
          ? body
          : JSON.stringify(body),
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      const text = await r.text();
      return { status: r.status, json: JSON.parse(text) };
    };
    const fetchVia = (proxyPort: number, n: number) =>
      curl([
        "-m",
        "15",
        "-o",
        "/dev/null",
        "--socks5-hostname",
        `127.0.0.1:${proxyPort}`,
        `http://127.0.0.1:${origin.port}/bytes/${n}`,
      ]);
    let server = await start();
    let client;
    try {
      const created = await api("POST", "/api/v1/users", { name: "bob" });
      assertEquals(created.status, 201, JSON.stringify(created.json));
      assert(/^[0-9a-f]{64}$/.test(created.json.key));
      assert(!server.output.some((l) => l.includes(created.json.key)), "the key is never logged");
      const link = decodeShareLink(created.json.link);
      assertEquals(link.server, { host: "127.0.0.1", port });
      assertEquals(formatAccessKey(link.key, "hex"), created.json.key);
      assertEquals((await api("GET", "/api/v1/users/bob/link")).json.link, created.json.link);

      client = await startClient(created.json.link, ["--keepalive", "1"]);
      assertEquals((await fetchVia(client.proxyPort, 100_000)).code, 0, "bob fetches");
      const bob = (await api("GET", "/api/v1/users/bob")).json;
      assert(bob.bytesDown >= 100_000, JSON.stringify(bob));
      assertEquals(bob.liveSessions, 1);
      assertEquals(bob.source, "api");
      const list = (await api("GET", "/api/v1/users")).json.users;
      assertEquals(list.map((u: { name: string }) => u.name), ["alice", "bob"]);
      assert(!JSON.stringify(list).includes(created.json.key), "the list never shows keys");

      // Disabled: the live session is closed with the reason.
      const from = client.daemon.output.length;
      const off = await api("PATCH", "/api/v1/users/bob", { enabled: false });
      assertEquals(off.status, 200);
      assertEquals(off.json.blocked, "account disabled");
      await client.daemon.waitFor(/connecting to .*\(account disabled\)/, 10_000, from);

      const reset = await api("POST", "/api/v1/users/bob/reset");
      assertEquals(reset.status, 200);
      assertEquals([reset.json.bytesUp, reset.json.bytesDown, reset.json.streams], [0, 0, 0]);
      assertEquals((await api("PATCH", "/api/v1/users/bob", { enabled: true })).status, 200);

      // Restart on the same state file: bob is still there and can connect.
      await server.stop();
      const before = client.daemon.output.length; // the server is down: no connect yet
      server = await start();
      const again = await api("GET", "/api/v1/users/bob");
      assertEquals(again.status, 200);
      assertEquals([again.json.source, again.json.enabled], ["api", true]);
      assertEquals(again.json.bytesDown, 0, "the reset survived the restart");
      await client.daemon.waitFor(/connected to/, 30_000, before);
      assertEquals((await fetchVia(client.proxyPort, 1000)).code, 0, "bob fetches again");

      // Errors.
      assertEquals((await api("POST", "/api/v1/users", { name: "bob" })).status, 409);
      assertEquals((await api("POST", "/api/v1/users", { name: "alice" })).status, 409);
      const bad = await api("POST", "/api/v1/users", "{not json");
      assertEquals([bad.status, bad.json.error], [400, "malformed JSON"]);
      const field = await api("POST", "/api/v1/users", { name: "carol", limitBytes: -5 });
      assertEquals(field.status, 400);
      assert(field.json.error.startsWith("limitBytes: "), field.json.error);
      assertEquals((await api("GET", "/api/v1/users/nobody")).status, 404);
      assertEquals((await api("DELETE", "/api/v1/users/nobody")).status, 404);
      const cfg = await api("PATCH", "/api/v1/users/alice", { enabled: false });
      assertEquals(cfg.status, 409);
      assert(cfg.json.error.includes("defined in the config file; edit it there"));

      // Delete: the session is kicked with the reason, and the user is gone.
      const mark = client.daemon.output.length;
      const del = await api("DELETE", "/api/v1/users/bob");
      assertEquals(del.status, 200);
      assertEquals(del.json.kickedSessions, 1);
      await client.daemon.waitFor(/connecting to .*user deleted/, 10_000, mark);
      assertEquals((await api("GET", "/api/v1/users/bob")).status, 404);
      assert(await server.alive());
    } finally {
      await client?.daemon.stop();
      await server.stop();
      await origin.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
