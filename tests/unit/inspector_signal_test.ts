/**
 * `ffi/inspector_signal.ts` in a child process: with FFI it finds and replaces
 * Deno's SIGUSR1 handler, after which the signal neither starts the inspector
 * nor ends the process; without FFI it warns once and does nothing.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { listeningSockets } from "../support/proc_sockets.ts";

const MODULE = new URL("../../ffi/inspector_signal.ts", import.meta.url).href;
const LOG = new URL("../../shared/log.ts", import.meta.url).href;
const CONFIG = new URL("../../deno.json", import.meta.url).pathname;

/** A child that runs disableInspectorSignal, prints its outcome, signals itself, and lingers. */
const CHILD = `
import { disableInspectorSignal } from "${MODULE}";
import { setupLogging } from "${LOG}";
await setupLogging({ level: "info", format: "text" });
const outcome = await disableInspectorSignal();
const again = await disableInspectorSignal();
console.log(JSON.stringify({ outcome, same: outcome === again }));
if (outcome.state === "disabled") {
  Deno.kill(Deno.pid, "SIGUSR1");
  await new Promise((r) => setTimeout(r, 800));
  console.log("alive");
  await new Promise((r) => setTimeout(r, 3000));
}
`;

/** Runs {@link CHILD} with exactly `perms` (`deno eval` would grant everything). */
function run(file: string, perms: string[]): Deno.ChildProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--config", CONFIG, ...perms, file],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  return child;
}

/** Writes {@link CHILD} to a temporary file. */
async function childFile(): Promise<string> {
  const file = await Deno.makeTempFile({ prefix: "ostp-inspector-", suffix: ".ts" });
  await Deno.writeTextFile(file, CHILD);
  return file;
}

async function readLines(stream: ReadableStream<Uint8Array>, until: RegExp): Promise<string[]> {
  const lines: string[] = [];
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    const parts = rest.split("\n");
    rest = parts.pop()!;
    lines.push(...parts);
    if (lines.some((l) => until.test(l))) break;
  }
  return lines;
}

Deno.test({
  name: "inspector signal: Deno's handler is replaced; SIGUSR1 then opens nothing",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const file = await childFile();
    const child = run(file, ["--allow-ffi", "--allow-read", "--allow-env"]);
    try {
      const out = await readLines(child.stdout, /^alive$/);
      const result = JSON.parse(out[0]);
      assertEquals(result.outcome.state, "disabled", out.join("\n"));
      assert(result.same, "later calls share the first result");
      assert(result.outcome.atMs >= 300 && result.outcome.atMs < 3000, `at ${result.outcome.atMs}`);
      assert(result.outcome.exposedMs < 100, `exposed ${result.outcome.exposedMs} ms`);
      assertEquals(out[1], "alive", "the process survived its own SIGUSR1");
      const listening = listeningSockets(child.pid);
      assertEquals(listening, [], "no inspector (or any) listener");
    } finally {
      try {
        child.kill("SIGTERM");
      } catch {
        // already exited
      }
      await child.status;
      await child.stdout.cancel().catch(() => {});
      await child.stderr.cancel();
      await Deno.remove(file);
    }
  },
});

Deno.test("inspector signal: without --allow-ffi a warning, once, and nothing else", async () => {
  const file = await childFile();
  let stdout: string, stderr: string, status: Deno.CommandStatus;
  try {
    const child = run(file, ["--allow-read", "--allow-env"]);
    [stdout, stderr, status] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.status,
    ]);
  } finally {
    await Deno.remove(file);
  }
  assertEquals(status.code, 0, stderr);
  assertEquals(JSON.parse(stdout.trim()), { outcome: { state: "no-ffi" }, same: true });
  const warnings = stderr.split("\n").filter((l) => l.includes("cannot disable Deno's"));
  assertEquals(warnings.length, 1, stderr);
  assert(warnings[0].includes("without --allow-ffi; never send that signal"), warnings[0]);
});
