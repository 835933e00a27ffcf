/**
 * Writes `build_info.json` (the commit being built) at the project's root for
 * `deno task compile`, which embeds it; `shared/version.ts` reads it back.
 * The file is not committed (.gitignore).
 * @module
 */

import { gitCommit } from "../shared/version.ts";

const commit = gitCommit() ?? "unknown";
await Deno.writeTextFile(
  new URL("../build_info.json", import.meta.url),
  JSON.stringify({ commit, builtAt: new Date().toISOString() }) + "\n",
);
console.log(`build_info.json: commit ${commit}`);
