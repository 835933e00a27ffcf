/**
 * Windows registry values as the host journal changes them (the system
 * proxy: docs/windows.md), behind {@link RegistryApi} so the journal and
 * the system-proxy logic run against a fake on any OS; the real one is
 * `ffi/registry_windows.ts`. The wire encodings of the two value types used
 * here are pure functions: REG_SZ is UTF-16LE with a terminating NUL,
 * REG_DWORD four bytes little-endian.
 * @module
 */

/** A value: a string (REG_SZ) or a 32-bit number (REG_DWORD). */
export type RegValue = { type: "sz"; data: string } | { type: "dword"; data: number };

/** Reads and writes values of keys (paths like `HKCU\Software\…`). */
export interface RegistryApi {
  /** The value `name` of `key`, or null when it is not set (or the key does not exist). */
  get(key: string, name: string): RegValue | null;
  /** Sets `name` of `key` (creating the key). Throws with the OS's reason. */
  set(key: string, name: string, value: RegValue): void;
  /** Removes `name` of `key`; nothing when it is not set. Throws with the OS's reason. */
  remove(key: string, name: string): void;
}

/** `REG_SZ`. */
export const REG_SZ = 1;
/** `REG_DWORD` (little-endian). */
export const REG_DWORD = 4;

/** A REG_SZ's bytes: UTF-16LE and a terminating NUL. */
export function encodeRegSz(s: string): Uint8Array {
  const out = new Uint8Array((s.length + 1) * 2);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    out[2 * i] = c & 0xff;
    out[2 * i + 1] = c >> 8;
  }
  return out;
}

/** A REG_SZ from its bytes (the terminating NUL, if any, and anything after it dropped). */
export function decodeRegSz(b: Uint8Array): string {
  let n = b.length & ~1;
  for (let i = 0; i + 1 < n; i += 2) {
    if (b[i] === 0 && b[i + 1] === 0) {
      n = i;
      break;
    }
  }
  return new TextDecoder("utf-16le").decode(b.subarray(0, n));
}

/** A REG_DWORD's four bytes. */
export function encodeDword(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n >>> 0, true);
  return out;
}

/** A REG_DWORD from its bytes; null unless exactly four. */
export function decodeDword(b: Uint8Array): number | null {
  if (b.length !== 4) return null;
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
}

/** An in-memory registry: the fake tests (and `--dry-run`-like previews) use. */
export class MemoryRegistry implements RegistryApi {
  readonly values = new Map<string, RegValue>();
  /** Every set/remove, in order, for assertions. */
  readonly log: string[] = [];

  private k(key: string, name: string): string {
    return `${key.toLowerCase()}|${name.toLowerCase()}`;
  }

  get(key: string, name: string): RegValue | null {
    const v = this.values.get(this.k(key, name));
    return v ? { ...v } : null;
  }

  set(key: string, name: string, value: RegValue): void {
    this.values.set(this.k(key, name), { ...value });
    this.log.push(`set ${name}=${value.data}`);
  }

  remove(key: string, name: string): void {
    this.values.delete(this.k(key, name));
    this.log.push(`remove ${name}`);
  }
}
