/**
 * End to end on loopback: real ostp-server and ostp-client processes, curl as
 * the application, payloads checked by SHA-256.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  curl,
  freePort,
  payload,
  sha256Hex,
  startClient,
  startOrigin,
  startServer,
} from "../support/daemons.ts";

const MiB = 1024 * 1024;

Deno.test({
  name: "e2e: curl through the tunnel (SOCKS5 and HTTP proxy)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const origin = startOrigin();
    const server = await startServer();
    const client = await startClient(server.link);
    const socks = ["--socks5-hostname", `127.0.0.1:${client.proxyPort}`];
    const http = ["-x", `http://127.0.0.1:${client.proxyPort}`];
    const base = `http://127.0.0.1:${origin.port}`;
    const tmp = await Deno.makeTempDir({ prefix: "ostp-e2e-" });
    try {
      const big = payload(64 * MiB, 7);
      const bigHash = await sha256Hex(big);
      origin.cache.set(`${64 * MiB}:7`, big);

      for (const [name, proxy] of [["socks5", socks], ["http", http]] as const) {
        await t.step(`${name}: 64 MiB download matches`, async () => {
          const file = `${tmp}/down-${name}`;
          const r = await curl([...proxy, "-o", file, `${base}/bytes/${64 * MiB}?seed=7`]);
          assertEquals(r.code, 0, r.stderr);
          assertEquals(await sha256Hex(await Deno.readFile(file)), bigHash);
        });
        await t.step(`${name}: 16 MiB upload matches`, async () => {
          const up = payload(16 * MiB, name === "http" ? 11 : 13);
          const file = `${tmp}/up-${name}`;
          await Deno.writeFile(file, up);
          const r = await curl([
            ...proxy,
            "--data-binary",
            `@${file}`,
            "-H",
            "Expect:",
            `${base}/upload`,
          ]);
          assertEquals(r.code, 0, r.stderr);
          assertEquals(new TextDecoder().decode(r.stdout), `${16 * MiB} ${await sha256Hex(up)}`);
        });
      }

      await t.step("100 concurrent connections all complete intact", async () => {
        const args = [...socks, "-Z", "--parallel-max", "100"];
        for (let i = 0; i < 100; i++) {
          args.push("-o", `${tmp}/par-${i}`, `${base}/bytes/${65536 + i}?seed=${i + 100}`);
        }
        const r = await curl(args);
        assertEquals(r.code, 0, r.stderr);
        for (let i = 0; i < 100; i++) {
          const got = await Deno.readFile(`${tmp}/par-${i}`);
          assertEquals(
            await sha256Hex(got),
            await sha256Hex(payload(65536 + i, i + 100)),
            `file ${i}`,
          );
        }
      });

      await t.step("keep-alive: several requests on one proxy connection", async () => {
        const r = await curl([
          "-v",
          ...http,
          `${base}/hello`,
          `${base}/bytes/1000`,
          `${base}/hello`,
        ]);
        assertEquals(r.code, 0, r.stderr);
        assertEquals(new TextDecoder().decode(r.stdout.subarray(0, 6)), "hello\n");
        assertEquals(r.stdout.length, 6 + 1000 + 6);
        assert(/Re-using existing connection/i.test(r.stderr), "curl reused the proxy connection");
      });

      await t.step("CONNECT tunnel through the HTTP proxy", async () => {
        const r = await curl([...http, "-p", `${base}/hello`]);
        assertEquals(r.code, 0, r.stderr);
        assertEquals(new TextDecoder().decode(r.stdout), "hello\n");
      });

      await t.step("a refused target gives a proper error, not a hang", async () => {
        const closed = `http://127.0.0.1:${freePort()}/`;
        const t0 = performance.now();
        const s = await curl([...socks, "-m", "20", closed]);
        assertEquals(s.code, 97, `socks: ${s.stderr}`); // CURLE_PROXY: SOCKS reply "connection refused"
        assert(/refused|reply 5|\(5\)/i.test(s.stderr), s.stderr);
        const h = await curl([
          ...http,
          "-m",
          "20",
          "-o",
          "/dev/null",
          "-w",
          "%{http_code}",
          closed,
        ]);
        assertEquals(new TextDecoder().decode(h.stdout), "502");
        assert(performance.now() - t0 < 15_000, "answered promptly");
      });
      assert(await server.daemon.alive(), "server still running");
      assert(await client.daemon.alive(), "client still running");
    } finally {
      await client.daemon.stop();
      const st = await server.daemon.stop();
      assertEquals(st.code, 0, "server exits cleanly on SIGTERM");
      await origin.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
