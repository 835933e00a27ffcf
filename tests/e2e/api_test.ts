/**
 * The management API on a real server: bearer token, status, sessions, kick
 * (the client shows the reason and reconnects), Prometheus metrics, errors.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { curl, freePort, spawnDeno, startClient, startOrigin } from "../support/daemons.ts";
import { encodeShareLink } from "../../shared/link.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

const TOKEN = "api-test-token-" + crypto.randomUUID();

Deno.test({
  name: "e2e: management API status, sessions, kick, metrics and errors",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const port = freePort("udp");
    const apiPort = freePort("tcp");
    const key = generateAccessKey();
    const file = await Deno.makeTempFile({ suffix: ".json" });
    await Deno.writeTextFile(
      file,
      JSON.stringify({
        listen: [`127.0.0.1:${port}`],
        users: [{ name: "alice", key: formatAccessKey(key, "hex") }],
        api: { listen: `127.0.0.1:${apiPort}`, token: TOKEN },
      }),
    );
    const server = spawnDeno("server", "server/main.ts", ["--config", file]);
    let client;
    const api = async (method: string, path: string, body?: string, token = TOKEN) => {
      const r = await fetch(`http://127.0.0.1:${apiPort}${path}`, {
        method,
        body,
        headers: { authorization: `Bearer ${token}` },
      });
      const text = await r.text();
      return { status: r.status, text, json: () => JSON.parse(text) };
    };
    try {
      await server.waitFor(/management API on/);
      assert(!server.output.some((l) => l.includes(TOKEN)), "the token is never logged");
      client = await startClient(
        encodeShareLink({ key, server: { host: "127.0.0.1", port }, name: "alice" }),
        ["--keepalive", "1"],
      );
      const get = await curl([
        "--socks5-hostname",
        `127.0.0.1:${client.proxyPort}`,
        `http://127.0.0.1:${origin.port}/bytes/100000`,
        "-o",
        "/dev/null",
      ]);
      assertEquals(get.code, 0);

      assertEquals(
        (await api("GET", "/api/v1/status", undefined, "wrong-token-0123456789")).status,
        401,
      );
      const status = (await api("GET", "/api/v1/status")).json();
      assertEquals(status.sessions, 1);
      assertEquals(status.users, 1);
      assert(status.bytesSent > 100000, JSON.stringify(status));

      const sessions = (await api("GET", "/api/v1/sessions")).json().sessions;
      assertEquals(sessions.length, 1);
      assertEquals(sessions[0].user, "alice");
      assert(/^127\.0\.0\.1:\d+$/.test(sessions[0].address));

      const metrics = await api("GET", "/metrics");
      assertEquals(metrics.status, 200);
      assert(metrics.text.includes("ostp_sessions 1"), metrics.text);
      assert(/ostp_user_bytes_total\{user="alice",direction="down"\} \d+/.test(metrics.text));

      assertEquals((await api("DELETE", `/api/v1/sessions/${sessions[0].id}`, "{bad")).status, 400);
      assertEquals((await api("DELETE", "/api/v1/sessions/ffffffff")).status, 404);
      assertEquals((await api("POST", "/api/v1/status")).status, 405);
      assertEquals(
        (await api("DELETE", `/api/v1/sessions/${sessions[0].id}`, "x".repeat(70000))).status,
        413,
      );
      const kick = await api(
        "DELETE",
        `/api/v1/sessions/${sessions[0].id}`,
        JSON.stringify({ reason: "maintenance" }),
      );
      assertEquals(kick.status, 200);
      await client.daemon.waitFor(/connecting to .*maintenance/, 10_000);
      await client.daemon.waitFor(/connected to/, 20_000, client.daemon.output.length - 1);
      assert(await server.alive());
    } finally {
      await client?.daemon.stop();
      await server.stop();
      await origin.close();
      await Deno.remove(file);
    }
  },
});
