/**
 * The release workflow's smoke test (tools/smoke.ts), run here on the
 * sources: our CI cannot download the Deno runtime `deno compile` needs, so
 * the binaries are smoke-tested by the release workflow on each platform,
 * and the check itself is kept working here.
 */
import { assert, assertEquals } from "../support/assert.ts";

Deno.test("release smoke test: server + client on loopback, one fetch through the proxy", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../tools/smoke.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assertEquals(out.code, 0, text + new TextDecoder().decode(out.stderr));
  assert(/smoke: ok \(4194304 bytes/.test(text), text);
  assert(/\(commit [0-9a-f]{7,12}|unknown/.test(text), "the version line names the commit");
});
