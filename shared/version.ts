/**
 * What `--version` prints: the version from deno.json, the git commit the
 * program was built from, and the target it runs as —
 * `ostp-client 0.1.0 (commit 6a1adc9, x86_64-unknown-linux-gnu, deno 2.9.6)`.
 *
 * The commit comes from `build_info.json` beside the sources in a compiled
 * binary (written by `deno task compile`, `tools/build_info.ts`), else from
 * the checkout's `.git` (read directly: no git binary needed), else "unknown".
 * @module
 */

import denoJson from "../deno.json" with { type: "json" };

/** The project's version (deno.json). */
export const VERSION: string = denoJson.version;

const ROOT = new URL("../", import.meta.url);

function readText(url: URL): string | null {
  try {
    return Deno.readTextFileSync(url).trim();
  } catch {
    return null;
  }
}

/** The commit of a git checkout at `root` (HEAD, a branch ref, or packed-refs), or null. */
export function gitCommit(root: URL = ROOT): string | null {
  const head = readText(new URL(".git/HEAD", root));
  if (!head) return null;
  if (/^[0-9a-f]{40}$/.test(head)) return head;
  const m = /^ref: (refs\/[^\s]+)$/.exec(head);
  if (!m) return null;
  const ref = readText(new URL(`.git/${m[1]}`, root));
  if (ref && /^[0-9a-f]{40}$/.test(ref)) return ref;
  const packed = readText(new URL(".git/packed-refs", root)) ?? "";
  for (const line of packed.split("\n")) {
    const [sha, name] = line.split(" ");
    if (name === m[1] && /^[0-9a-f]{40}$/.test(sha)) return sha;
  }
  return null;
}

/** The commit this program was built from (short), or "unknown". */
export function buildCommit(): string {
  const info = readText(new URL("build_info.json", ROOT));
  if (info) {
    try {
      const c = JSON.parse(info).commit;
      if (typeof c === "string" && /^[0-9a-f]{7,40}$/.test(c)) return c.slice(0, 12);
    } catch {
      // fall through
    }
  }
  return gitCommit()?.slice(0, 12) ?? "unknown";
}

/** The `--version` line of `program`. */
export function versionLine(program: string): string {
  return `${program} ${VERSION} (commit ${buildCommit()}, ${Deno.build.target}, deno ${Deno.version.deno})`;
}
