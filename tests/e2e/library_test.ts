/**
 * The library face (mod.ts): start a server and a client from code, subscribe
 * to state, stats and log events, move bytes through the proxy, stop both.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  addLogListener,
  formatAccessKey,
  generateAccessKey,
  OstpClient,
  OstpServer,
  parseClientConfig,
  parseServerConfig,
  setupLogging,
  type TrafficStats,
} from "../../mod.ts";
import { startOrigin } from "../support/daemons.ts";

async function httpGetViaProxy(proxyPort: number, url: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  await conn.write(
    new TextEncoder().encode(`GET ${url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
  );
  const chunks: string[] = [];
  const buf = new Uint8Array(65536);
  const dec = new TextDecoder();
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(dec.decode(buf.subarray(0, n), { stream: true }));
  }
  conn.close();
  return chunks.join("");
}

Deno.test("library: start, subscribe to events, transfer, stop", async () => {
  const origin = startOrigin();
  const key = formatAccessKey(generateAccessKey(), "hex");
  // The origin is on loopback, which the egress policy refuses unless allowed.
  const server = new OstpServer(
    parseServerConfig({ listen: ["127.0.0.1:0"], keys: [key], egress: { allow: ["127.0.0.0/8"] } }),
    { statsIntervalMs: 100 },
  );
  const serverStates: string[] = [];
  server.events.on("state", (e) => serverStates.push(e.state));
  const sessions: string[] = [];
  server.events.on("session", (e) => sessions.push(e.type));
  server.start();
  const client = new OstpClient(
    parseClientConfig({
      server: `127.0.0.1:${server.addresses[0].port}`,
      key,
      listen: "127.0.0.1:0",
    }),
    { statsIntervalMs: 100 },
  );
  const states: string[] = [];
  client.events.on("state", (e) => states.push(e.state));
  const stats: TrafficStats[] = [];
  const off = client.events.on("stats", (s) => stats.push(s));
  await setupLogging({ level: "info", format: "text" }, { output: null });
  const logs: string[] = [];
  const unlisten = addLogListener((r) => logs.push(r.category));
  try {
    await client.start();
    const res = await httpGetViaProxy(
      client.proxyAddress.port,
      `http://127.0.0.1:${origin.port}/bytes/200000`,
    );
    assert(res.startsWith("HTTP/1.1 200"), res.slice(0, 40));
    await new Promise((r) => setTimeout(r, 350));
    assertEquals(states.slice(0, 3), ["idle", "connecting", "connected"]);
    assert(stats.length >= 2, "stats events arrive periodically");
    const last = stats[stats.length - 1];
    assert(last.bytesReceived > 200000, `counted bytes: ${last.bytesReceived}`);
    assert(last.packetsReceived > 100 && last.rttMs > 0 && last.cwnd > 0, JSON.stringify(last));
    assertEquals(sessions, ["opened"]);
    assert(logs.some((c) => c.includes("client")), "log records reach listeners");
  } finally {
    off();
    unlisten();
    await client.stop();
    await server.stop();
    await origin.close();
  }
  assertEquals(states[states.length - 1], "stopped");
  assertEquals(serverStates, ["starting", "running", "stopped"]);
});

Deno.test("library: mapping events (up, refused) and per-mapping bytes in stats", async () => {
  const origin = startOrigin();
  const key = formatAccessKey(generateAccessKey(), "hex");
  const server = new OstpServer(
    parseServerConfig({ listen: ["127.0.0.1:0"], keys: [key], egress: { allow: ["127.0.0.0/8"] } }),
  );
  server.start();
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const out = (l.addr as Deno.NetAddr).port;
  l.close();
  const client = new OstpClient(
    parseClientConfig({
      server: `127.0.0.1:${server.addresses[0].port}`,
      key,
      proxy: false,
      mappings: { tcp: [`OUT^${out}^127.0.0.1:${origin.port}`, "IN^1^127.0.0.1:40999"] },
    }),
  );
  const events: string[] = [];
  client.events.on("mapping", (e) => events.push(`${e.spec} ${e.state}`));
  await client.start();
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: out });
    await conn.write(new TextEncoder().encode("GET /hello HTTP/1.0\r\n\r\n"));
    const buf = new Uint8Array(4096);
    let text = "";
    for (let n; (n = await conn.read(buf)) !== null;) {
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    conn.close();
    assert(text.endsWith("hello\n"), text);
    for (let i = 0; i < 50 && !events.some((e) => e.includes("IN^") && e.endsWith("down")); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assertEquals(events.includes(`OUT^${out}^127.0.0.1:${origin.port} up`), true, events.join());
    assertEquals(events.includes("IN^1^127.0.0.1:40999 down"), true, "refused: no allowInPorts");
    const m = client.stats().mappings!;
    assert(m[0].bytesDown > 0 && m[0].flows === 1, JSON.stringify(m));
  } finally {
    await client.stop();
    await server.stop();
    await origin.close();
  }
});
