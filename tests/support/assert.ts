/**
 * Minimal assertions for Deno.test (JSR's @std/assert is unreachable here).
 * @module
 */

/** Thrown when an assertion fails. */
export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

/** Asserts that `cond` is truthy. */
export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

function equal(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => equal(x, b[i]));
  }
  if (a && b && typeof a === "object" && typeof b === "object") {
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    return ka.length === kb.length &&
      ka.every((k) => equal((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
  }
  return false;
}

function show(v: unknown): string {
  if (v instanceof Uint8Array) return `Uint8Array(${v.length})`;
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

/** Asserts deep equality (Uint8Array, arrays, plain objects, primitives). */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  if (!equal(actual, expected)) {
    throw new AssertionError(
      `${msg ? msg + ": " : ""}expected ${show(expected)}, got ${show(actual)}`,
    );
  }
}

/** Asserts that `fn` throws (an instance of `cls`, if given, whose message includes `msgIncludes`). */
export function assertThrows(
  fn: () => unknown,
  cls?: new (...a: any[]) => Error,
  msgIncludes?: string,
): Error {
  try {
    fn();
  } catch (e) {
    if (cls && !(e instanceof cls)) throw new AssertionError(`wrong error: got ${String(e)}`);
    if (msgIncludes && !(e as Error).message.includes(msgIncludes)) {
      throw new AssertionError(`error message "${(e as Error).message}" lacks "${msgIncludes}"`);
    }
    return e as Error;
  }
  throw new AssertionError("expected a throw");
}

/** Asserts that the promise rejects; returns the error. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  cls?: new (...a: any[]) => Error,
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    if (cls && !(e instanceof cls)) throw new AssertionError(`wrong error: ${String(e)}`);
    return e as Error;
  }
  throw new AssertionError("expected a rejection");
}

/** Hex string to bytes. */
export function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substring(2 * i, 2 * i + 2), 16);
  return out;
}

/** Bytes to lowercase hex. */
export function toHexStr(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
