/**
 * The `control` field both daemons' configs share: the path of the local
 * control socket (`shared/control/`), or `false` for none. Absent (or `null`):
 * the default path (`shared/control/path.ts`).
 * @module
 */

import type { ConfigIssue, ObjectReader } from "./types.ts";
import { typeName } from "./types.ts";

/** Longest socket path accepted, bytes: fits `sun_path` on Linux (108) and macOS (104). */
export const MAX_CONTROL_PATH_BYTES = 103;

/** Validates a `control` value found at `path`; `undefined` means the default. */
export function readControlValue(
  v: unknown,
  path: string,
  issues: ConfigIssue[],
): string | false | undefined {
  if (v === undefined || v === null) return undefined;
  if (v === false) return false;
  if (typeof v !== "string") {
    issues.push({ path, message: `expected a socket path or false, got ${typeName(v)}` });
    return undefined;
  }
  if (v.length === 0 || v.includes("\0") || v.endsWith("/")) {
    issues.push({ path, message: "expected a socket file path" });
    return undefined;
  }
  const n = new TextEncoder().encode(v).length;
  if (n > MAX_CONTROL_PATH_BYTES) {
    issues.push({ path, message: `must be at most ${MAX_CONTROL_PATH_BYTES} bytes (got ${n})` });
    return undefined;
  }
  return v;
}

/** Reads the `control` field of a daemon config. */
export function readControlSetting(r: ObjectReader): string | false | undefined {
  return readControlValue(r.get("control"), r.at("control"), r.issues);
}
