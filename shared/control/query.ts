/**
 * The asking side of the control socket ({@link ./server.ts}): sends one
 * request line and reads the one answer line.
 * @module
 */

/** Longest answer line read, bytes. */
export const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

/** No daemon answers on the socket (missing, refused, closed without answering, or too slow). */
export class ControlUnavailableError extends Error {
  /** Creates the error; `path` is the socket tried. */
  constructor(readonly path: string, message: string) {
    super(message);
    this.name = "ControlUnavailableError";
  }
}

/**
 * Sends `request` as one JSON line to the control socket at `path` and returns
 * the parsed answer (`{"ok":true,…}` or `{"ok":false,"error":…}`).
 * @throws {ControlUnavailableError} when no daemon answers within `timeoutMs`
 *   (default 5000) or the answer is not a JSON object.
 */
export async function queryControl(
  path: string,
  request: Record<string, unknown>,
  options: { timeoutMs?: number } = {},
): Promise<Record<string, unknown>> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "no such socket"
      : e instanceof Deno.errors.ConnectionRefused
      ? "connection refused (stale socket)"
      : e instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : (e as Error).message;
    throw new ControlUnavailableError(path, `no daemon answers on ${path}: ${why}`);
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn.close();
    } catch {
      // already closed
    }
  }, options.timeoutMs ?? 5000);
  try {
    const line = new TextEncoder().encode(JSON.stringify(request) + "\n");
    for (let off = 0; off < line.length;) off += await conn.write(line.subarray(off));
    const chunks: Uint8Array[] = [];
    let total = 0;
    let done = false;
    const buf = new Uint8Array(64 * 1024);
    while (!done) {
      const n = await conn.read(buf);
      if (n === null) break;
      const nl = buf.subarray(0, n).indexOf(10);
      const part = buf.slice(0, nl >= 0 ? nl : n);
      chunks.push(part);
      total += part.length;
      done = nl >= 0;
      if (total > MAX_ANSWER_BYTES) {
        throw new ControlUnavailableError(path, `the answer on ${path} is too long`);
      }
    }
    const text = new TextDecoder().decode(concat(chunks, total));
    let answer: unknown;
    try {
      answer = JSON.parse(text);
    } catch {
      throw new ControlUnavailableError(path, `no valid answer on ${path}`);
    }
    if (typeof answer !== "object" || answer === null || Array.isArray(answer)) {
      throw new ControlUnavailableError(path, `no valid answer on ${path}`);
    }
    return answer as Record<string, unknown>;
  } catch (e) {
    if (e instanceof ControlUnavailableError) throw e;
    const why = timedOut ? "timed out" : (e as Error).message;
    throw new ControlUnavailableError(path, `no answer on ${path}: ${why}`);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}
