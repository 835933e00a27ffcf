/**
 * Smoke test of the embedded default: runs exactly `deno task quickstart`,
 * fetches through the proxy it prints with curl, stops it with SIGINT.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { curl, Daemon, startOrigin } from "../support/daemons.ts";

Deno.test({
  name: "e2e: deno task quickstart serves a working proxy",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = startOrigin();
    const proc = new Deno.Command(Deno.execPath(), {
      args: ["task", "quickstart"],
      cwd: new URL("../../", import.meta.url).pathname,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const d = new Daemon("quickstart", proc);
    try {
      const m = await d.waitFor(/proxy ready: socks5:\/\/(\S+) and http/, 60_000);
      assert(d.output.some((l) => /share link: ostp:\/\//.test(l)), "prints the share link");
      // Its origin lives on loopback, which the server's egress policy refuses by default: the
      // quickstart opens loopback and says so.
      assert(
        d.output.some((l) => /egress: .*allows loopback \(127\.0\.0\.0\/8, ::1\/128\)/.test(l)),
        "says that it allows loopback",
      );
      const r = await curl(["-x", `socks5h://${m[1]}`, `http://127.0.0.1:${origin.port}/hello`]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(new TextDecoder().decode(r.stdout), "hello\n");
    } finally {
      const st = await d.stop("SIGINT");
      await origin.close();
      assertEquals(st.code, 0, d.output.join("\n"));
    }
  },
});
