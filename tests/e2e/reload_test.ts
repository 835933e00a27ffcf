/**
 * Hot reload: SIGHUP and config file changes apply keys without dropping the
 * sessions of keys that remain; a config that fails validation is refused
 * with its reason and the running one kept.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { curl, freePort, spawnDeno, startClient, startOrigin } from "../support/daemons.ts";
import { encodeShareLink } from "../../shared/link.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

Deno.test({
  name:
    "e2e: hot reload keeps sessions of remaining keys, closes removed ones, refuses bad configs",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const port = freePort("udp");
    const [k1, k2, k3] = [generateAccessKey(), generateAccessKey(), generateAccessKey()];
    const file = await Deno.makeTempFile({ suffix: ".jsonc" });
    const write = (keys: Uint8Array[], extra = "") =>
      Deno.writeTextFile(
        file,
        `{ "listen": ["127.0.0.1:${port}"], "keys": [${
          keys.map((k) => `"${formatAccessKey(k, "hex")}"`).join(", ")
        }]${extra} }`,
      );
    await write([k1, k2]);
    const server = spawnDeno("server", "server/main.ts", ["--config", file]);
    const link = (k: Uint8Array) =>
      encodeShareLink({ key: k, server: { host: "127.0.0.1", port } });
    let a, b;
    try {
      await server.waitFor(/share link/);
      a = await startClient(link(k1), ["--keepalive", "1"]);
      b = await startClient(link(k2), ["--keepalive", "1"]);
      const get = (c: { proxyPort: number }) =>
        curl([
          "-m",
          "15",
          "--socks5-hostname",
          `127.0.0.1:${c.proxyPort}`,
          `http://127.0.0.1:${origin.port}/hello`,
        ]);
      assertEquals((await get(a)).code, 0);
      assertEquals((await get(b)).code, 0);

      // Remove k2, add k3, via SIGHUP.
      await write([k3, k1]);
      let from = server.output.length;
      server.signal("SIGHUP");
      await server.waitFor(/config reloaded .*1 session\(s\) closed/, 10_000, from);
      await b.daemon.waitFor(/connecting to .*access key removed/, 10_000);
      assertEquals((await get(a)).code, 0, "the remaining key's session still works");
      assertEquals(a.daemon.count(/connected to/), 1, "without reconnecting");
      const c = await startClient(link(k3));
      assertEquals((await get(c)).code, 0, "the new key works");
      await c.daemon.stop();

      // A config that fails validation is refused; the running one stays.
      await Deno.writeTextFile(file, `{ "listen": ["127.0.0.1:${port}"], "keys": ["not-a-key"] }`);
      from = server.output.length;
      server.signal("SIGHUP");
      const rej = await server.waitFor(/config reload .* rejected/, 10_000, from);
      assert(!rej.input!.includes("not-a-key"), "the bad value is not echoed");
      assertEquals((await get(a)).code, 0, "still serving");

      // Editing the file is enough (no signal): k1 removed now.
      from = server.output.length;
      await write([k3]);
      await server.waitFor(/config reloaded \(file changed\)/, 10_000, from);
      await a.daemon.waitFor(/connecting to .*access key removed/, 10_000);
      assert(await server.alive());
    } finally {
      await a?.daemon.stop();
      await b?.daemon.stop();
      await server.stop();
      await origin.close();
      await Deno.remove(file);
    }
  },
});
