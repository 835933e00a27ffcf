/**
 * Operator signals open nothing: after 1.5 s of uptime (Deno installs its
 * inspector-starting SIGUSR1 handler at about 0.5 s), SIGHUP (server), SIGUSR2
 * (client) and SIGUSR1 (both) leave each daemon with the same listening
 * sockets, nothing new on 127.0.0.1:9229, no "Debugger listening" line, alive
 * and still carrying traffic. The daemons log (category ffi.inspector, debug)
 * when they replaced Deno's handler, which also gives the exposure window.
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
import { describeSockets, listeningSockets } from "../support/proc_sockets.ts";
import { encodeShareLink } from "../../shared/link.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

const INSPECTOR_PORT = 9229;
const LOG = { level: "info", format: "text", categories: { "ffi.inspector": "debug" } };

async function accepting(port: number): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.close();
    return true;
  } catch {
    return false;
  }
}

/** Waits until `ms` have passed since `t0` (performance.now() time). */
async function until(t0: number, ms: number): Promise<void> {
  const left = t0 + ms - performance.now();
  if (left > 0) await new Promise((r) => setTimeout(r, left));
}

/** The exposure figure the daemon logged when it replaced Deno's handler. */
async function replaced(d: Daemon): Promise<string> {
  const m = await d.waitFor(
    /inspector signal handler replaced at (\d+) ms \(exposed ≤ ([\d.]+) ms\)/,
  );
  return `${d.name}: replaced at ${m[1]} ms after start, exposed ≤ ${m[2]} ms`;
}

Deno.test({
  name: "e2e signals: SIGHUP, SIGUSR2 and SIGUSR1 open no socket and no inspector",
  ignore: Deno.build.os !== "linux",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const dir = await Deno.makeTempDir({ prefix: "ostp-signals-" });
    const key = generateAccessKey();
    const port = freePort("udp");
    const serverFile = `${dir}/server.json`;
    const clientFile = `${dir}/client.json`;
    await Deno.writeTextFile(
      serverFile,
      JSON.stringify({
        listen: [`127.0.0.1:${port}`],
        keys: [formatAccessKey(key, "hex")],
        log: LOG,
      }),
    );
    await Deno.writeTextFile(clientFile, JSON.stringify({ log: LOG, keepalive: 1 }));
    const inspectorBefore = await accepting(INSPECTOR_PORT);
    const daemons: Daemon[] = [];
    try {
      const t0 = performance.now();
      const server = spawnDeno("server", "server/main.ts", ["--config", serverFile]);
      daemons.push(server);
      await server.waitFor(/share link/);
      const link = encodeShareLink({ key, server: { host: "127.0.0.1", port } });
      const tc = performance.now();
      const client = await startClient(link, ["--config", clientFile]);
      daemons.push(client.daemon);
      const fetch = () =>
        curl([
          "-m",
          "15",
          "--socks5-hostname",
          `127.0.0.1:${client.proxyPort}`,
          `http://127.0.0.1:${origin.port}/hello`,
        ]);
      assertEquals((await fetch()).code, 0, "works before the signals");
      await until(t0, 1500);
      await until(tc, 1500);
      const figures = [await replaced(server), await replaced(client.daemon)];

      const before = new Map(daemons.map((d) => [d, listeningSockets(d.pid)]));
      for (const d of daemons) {
        assert(
          !before.get(d)!.some((s) => s.local.endsWith(`:${INSPECTOR_PORT}`)),
          `${d.name} listens on the inspector port before any signal`,
        );
      }
      server.signal("SIGHUP");
      client.daemon.signal("SIGUSR2");
      await server.waitFor(/config reloaded \(SIGHUP\)/, 10_000);
      await client.daemon.waitFor(/moved \d+ session\(s\) to new UDP sockets/, 10_000);
      for (const d of daemons) d.signal("SIGUSR1");
      // The inspector, if started, listens within milliseconds; give it ample time.
      await new Promise((r) => setTimeout(r, 1500));

      for (const d of daemons) {
        assert(await d.alive(), `${d.name} survived SIGUSR1`);
        const after = listeningSockets(d.pid);
        // The client's SIGUSR2 replaces its (unconnected) UDP session sockets by design.
        const compared = (s: typeof after) =>
          describeSockets(
            d === client.daemon ? s.filter((x) => !x.kind.startsWith("udp")) : s,
          );
        assertEquals(compared(after), compared(before.get(d)!), `${d.name}: listening sockets`);
        assert(
          !after.some((s) => s.local.endsWith(`:${INSPECTOR_PORT}`)),
          `${d.name} listens on ${INSPECTOR_PORT}`,
        );
        assertEquals(d.count(/Debugger listening/), 0, `${d.name} started the inspector`);
      }
      if (!inspectorBefore) {
        assert(!(await accepting(INSPECTOR_PORT)), "something listens on 127.0.0.1:9229");
      }
      assertEquals((await fetch()).code, 0, "works after the signals");
      assertEquals(
        (await server.statsDump()).stats.sessions,
        1,
        "the client's session survived the hop",
      );
      for (const f of figures) console.log(`  ${f}`);
    } finally {
      for (const d of daemons.reverse()) await d.stop();
      await origin.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
