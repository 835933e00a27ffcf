/**
 * `ostp-server status` / `ostp-client status` against live daemons (readable,
 * `--json`, the path taken from `-c config`) and against none (exit 1); the
 * control socket's `reload` (server) and `hop` (client); a second daemon on a
 * live socket runs without one; the socket file goes away when a daemon stops
 * cleanly.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  curl,
  type Daemon,
  freePort,
  spawnDeno,
  startClient,
  startOrigin,
} from "../support/daemons.ts";
import { encodeShareLink } from "../../shared/link.ts";
import { queryControl } from "../../shared/control/query.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** Runs `deno run <entry> status …`; returns exit code and output. */
async function status(entry: string, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ROOT + entry, "status", ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test({
  name: "e2e status: both daemons answer status, reload and hop on their control sockets",
  ignore: Deno.build.os === "windows",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const dir = await Deno.makeTempDir({ prefix: "ostp-status-" });
    const key = generateAccessKey();
    const port = freePort("udp");
    const file = `${dir}/server.jsonc`;
    const serverSock = `${dir}/run/server.sock`;
    const config = (keys: string[]) =>
      JSON.stringify({ listen: [`127.0.0.1:${port}`], keys, control: serverSock });
    await Deno.writeTextFile(file, config([formatAccessKey(key, "hex")]));
    const daemons: Daemon[] = [];
    try {
      // The config's control path, given again so the spawn helper adds no other.
      const server = spawnDeno("server", "server/main.ts", [
        "--config",
        file,
        "--control",
        serverSock,
      ]);
      daemons.push(server);
      await server.waitFor(/share link/);
      const link = encodeShareLink({ key, server: { host: "127.0.0.1", port } });
      const client = await startClient(link);
      daemons.push(client.daemon);
      const clientSock = client.daemon.controlPath!;
      const get = () =>
        curl([
          "-m",
          "15",
          "--socks5-hostname",
          `127.0.0.1:${client.proxyPort}`,
          `http://127.0.0.1:${origin.port}/hello`,
        ]);
      assertEquals((await get()).code, 0);

      // Readable, with the path from -c.
      const s = await status("server/main.ts", ["-c", file]);
      assertEquals(s.code, 0, s.stderr);
      assert(s.stdout.includes(` on ${serverSock}`), s.stdout);
      assert(/^stats:$/m.test(s.stdout) && /^ {2}sessions +1$/m.test(s.stdout), s.stdout);
      assert(/^rssBytes +\d+ \(\d+\.\d MiB\)$/m.test(s.stdout), s.stdout);
      assert(/^users \(1\):\n {2}key-1: /m.test(s.stdout), s.stdout);
      // Raw JSON.
      const j = await status("server/main.ts", ["--control", serverSock, "--json"]);
      assertEquals(j.code, 0, j.stderr);
      const answer = JSON.parse(j.stdout);
      assertEquals(answer.ok, true);
      assertEquals(answer.stats.sessions, 1);
      assert(answer.rssBytes > 0 && Array.isArray(answer.users), j.stdout);
      const c = await status("client/main.ts", ["--control", clientSock, "--json"]);
      assertEquals(c.code, 0, c.stderr);
      const ca = JSON.parse(c.stdout);
      assertEquals(ca.stats.sessions, 1);
      assert(ca.stats.bytesReceived > 0, c.stdout);
      assertEquals(Object.keys(ca).sort(), ["ok", "rules", "sessions", "stats"]);
      assertEquals(ca.sessions.length, 1);
      assertEquals([ca.sessions[0].name, ca.sessions[0].state], ["session 0", "connected"]);
      assert(ca.sessions[0].localPort > 0, JSON.stringify(ca.sessions));
      // No routing config: one entry, the default, which carried the request.
      assertEquals(ca.rules, [{ rule: -1, label: "default", outbound: "ostp", hits: 1 }]);
      assertEquals(ca.stats.routerUdp, { flows: 0, blocked: 0, noUdp: 0, failed: 0 });
      const ch = await status("client/main.ts", ["--control", clientSock]);
      assert(
        /^rules \(1\):\n {2}default: rule -1, outbound ostp, hits 1$/m.test(ch.stdout),
        ch.stdout,
      );

      // A second daemon on the same socket warns, runs without one, and leaves the first's alone.
      const second = spawnDeno("server2", "server/main.ts", [
        "-k",
        formatAccessKey(generateAccessKey(), "hex"),
        "-l",
        "127.0.0.1:0",
        "--control",
        serverSock,
      ]);
      daemons.push(second);
      await second.waitFor(/share link/);
      assertEquals(
        second.count(/running without a control socket: another process answers on /),
        1,
        second.output.join("\n"),
      );
      await second.stop();
      daemons.splice(daemons.indexOf(second), 1);
      assertEquals((await server.statsDump()).stats.sessions, 1, "the first still answers");

      // hop: what SIGUSR2 does.
      const hop = await client.daemon.control({ cmd: "hop" });
      assertEquals(hop.moved, 1);
      await client.daemon.waitFor(/moved 1 session\(s\) to new UDP sockets/);
      assertEquals((await get()).code, 0, "works after the hop");
      // reload: what SIGHUP does; a config that fails validation is an error answer.
      const r = await server.control({ cmd: "reload" });
      assertEquals(r.closedSessions, 0);
      assertEquals(r.needsRestart, []);
      await Deno.writeTextFile(file, config(["not a key"]));
      const bad = await new Promise<Record<string, unknown>>((resolve, reject) =>
        server.control({ cmd: "reload" }).then(
          () => reject(new Error("a bad config was accepted")),
          (e: Error) => resolve({ message: e.message }),
        )
      );
      assert(String(bad.message).includes("keys[0]"), String(bad.message));
      assertEquals((await get()).code, 0, "the running config stayed");
      // The client reloads too (its routing); unknown commands are refused; it carries on.
      const cr = await client.daemon.control({ cmd: "reload" });
      assertEquals([cr.rules, cr.needsRestart], [0, []]);
      const unknown = await queryControl(clientSock, { cmd: "frobnicate" });
      assertEquals(unknown.ok, false);
      assertEquals(unknown.error, "unknown command (known: status, hop, reload)");
      assert(await client.daemon.alive());

      await client.daemon.stop();
      daemons.splice(daemons.indexOf(client.daemon), 1);
      await server.stop();
      daemons.splice(daemons.indexOf(server), 1);
      for (const p of [serverSock, clientSock]) {
        let gone = false;
        try {
          await Deno.lstat(p);
        } catch (e) {
          gone = e instanceof Deno.errors.NotFound;
        }
        assert(gone, `${p} removed on clean exit`);
      }
      // No daemon: a clear error, exit 1.
      for (const entry of ["server/main.ts", "client/main.ts"]) {
        const none = await status(entry, ["--control", serverSock]);
        assertEquals(none.code, 1, entry);
        assert(none.stderr.includes(`no daemon answers on ${serverSock}`), none.stderr);
        assertEquals(none.stdout, "");
      }
    } finally {
      for (const d of daemons.reverse()) await d.stop();
      await origin.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
