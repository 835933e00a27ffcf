/** `--version`: version, commit (from .git or build_info.json) and target. */
import { assert, assertEquals } from "../support/assert.ts";
import { gitCommit, versionLine } from "../../shared/version.ts";
import { parseClientArgs } from "../../client/cli.ts";

Deno.test("version: the line names the version, a commit and the target", async () => {
  const line = versionLine("ostp-client");
  assert(/^ostp-client \d+\.\d+\.\d+ \(commit ([0-9a-f]{7,12}|unknown), /.test(line), line);
  assert(line.includes(Deno.build.target), line);
  const r = await parseClientArgs(["--version"]);
  assertEquals(r.kind, "version");
  assert("text" in r && r.text.includes(Deno.build.target), JSON.stringify(r));
});

Deno.test("version: a commit is read from .git without git (HEAD, a ref, packed-refs)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const root = new URL(`file://${dir}/`);
    const sha = "0123456789abcdef0123456789abcdef01234567";
    await Deno.mkdir(`${dir}/.git/refs/heads`, { recursive: true });
    await Deno.writeTextFile(`${dir}/.git/HEAD`, "ref: refs/heads/main\n");
    assertEquals(gitCommit(root), null, "no such ref yet");
    await Deno.writeTextFile(`${dir}/.git/packed-refs`, `# pack-refs\n${sha} refs/heads/main\n`);
    assertEquals(gitCommit(root), sha);
    const other = "f".repeat(40);
    await Deno.writeTextFile(`${dir}/.git/refs/heads/main`, `${other}\n`);
    assertEquals(gitCommit(root), other, "a loose ref wins over packed-refs");
    await Deno.writeTextFile(`${dir}/.git/HEAD`, `${sha}\n`);
    assertEquals(gitCommit(root), sha, "a detached HEAD");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
