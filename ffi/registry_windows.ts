/**
 * The Windows registry through Deno FFI (advapi32.dll): `RegCreateKeyExW`,
 * `RegQueryValueExW`, `RegSetValueExW`, `RegDeleteValueW`, `RegCloseKey`,
 * for the current user's keys (`HKCU\…`) — what the system proxy needs
 * (docs/windows.md). The value encodings are `shared/host/registry.ts`'s,
 * tested on every OS; this module only moves bytes, and only on Windows.
 * @module
 */

import {
  decodeDword,
  decodeRegSz,
  encodeDword,
  encodeRegSz,
  REG_DWORD,
  REG_SZ,
  type RegistryApi,
  type RegValue,
} from "../shared/host/registry.ts";

/** `HKEY_CURRENT_USER` as a predefined handle. */
const HKEY_CURRENT_USER = 0x80000001n;
/** `KEY_QUERY_VALUE | KEY_SET_VALUE`. */
const KEY_READ_WRITE = 0x0001 | 0x0002;
const ERROR_SUCCESS = 0;
const ERROR_FILE_NOT_FOUND = 2;
const ERROR_MORE_DATA = 234;

const ADVAPI32 = {
  RegCreateKeyExW: {
    parameters: [
      "pointer",
      "buffer",
      "u32",
      "pointer",
      "u32",
      "u32",
      "pointer",
      "buffer",
      "pointer",
    ],
    result: "i32",
  },
  RegQueryValueExW: {
    parameters: ["pointer", "buffer", "pointer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  RegSetValueExW: {
    parameters: ["pointer", "buffer", "u32", "u32", "buffer", "u32"],
    result: "i32",
  },
  RegDeleteValueW: { parameters: ["pointer", "buffer"], result: "i32" },
  RegCloseKey: { parameters: ["pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: Deno.DynamicLibrary<typeof ADVAPI32> | null = null;

function api(): Deno.DynamicLibrary<typeof ADVAPI32>["symbols"] {
  if (Deno.build.os !== "windows") throw new Error("the registry is only on Windows");
  lib ??= Deno.dlopen("advapi32.dll", ADVAPI32);
  return lib.symbols;
}

/** The subkey path under HKCU of `key` ("HKCU\\Software\\…" or "HKEY_CURRENT_USER\\…"). */
export function hkcuSubkey(key: string): string {
  const m = /^(HKCU|HKEY_CURRENT_USER)\\(.+)$/i.exec(key);
  if (!m) throw new Error(`only HKCU keys are supported: ${key}`);
  return m[2];
}

function wide(s: string): Uint8Array<ArrayBuffer> {
  return encodeRegSz(s) as Uint8Array<ArrayBuffer>;
}

/** The current user's registry. */
export class WindowsRegistry implements RegistryApi {
  private open<T>(key: string, fn: (h: Deno.PointerValue) => T): T {
    const s = api();
    const out = new BigUint64Array(1);
    const rc = s.RegCreateKeyExW(
      Deno.UnsafePointer.create(HKEY_CURRENT_USER),
      wide(hkcuSubkey(key)),
      0,
      null,
      0,
      KEY_READ_WRITE,
      null,
      new Uint8Array(out.buffer),
      null,
    );
    if (rc !== ERROR_SUCCESS) throw new Error(`RegCreateKeyExW ${key}: error ${rc}`);
    const h = Deno.UnsafePointer.create(out[0]);
    try {
      return fn(h);
    } finally {
      s.RegCloseKey(h);
    }
  }

  get(key: string, name: string): RegValue | null {
    return this.open(key, (h) => {
      const s = api();
      const type = new Uint8Array(4);
      const size = new Uint8Array(4);
      const sv = new DataView(size.buffer);
      let buf = new Uint8Array(1024);
      for (let i = 0; i < 4; i++) {
        sv.setUint32(0, buf.length, true);
        const rc = s.RegQueryValueExW(h, wide(name), null, type, buf, size);
        if (rc === ERROR_FILE_NOT_FOUND) return null;
        if (rc === ERROR_MORE_DATA) {
          buf = new Uint8Array(sv.getUint32(0, true) + 2);
          continue;
        }
        if (rc !== ERROR_SUCCESS) throw new Error(`RegQueryValueExW ${name}: error ${rc}`);
        const bytes = buf.subarray(0, sv.getUint32(0, true));
        const t = new DataView(type.buffer).getUint32(0, true);
        if (t === REG_SZ) return { type: "sz", data: decodeRegSz(bytes) };
        if (t === REG_DWORD) {
          const d = decodeDword(bytes);
          if (d !== null) return { type: "dword", data: d };
        }
        throw new Error(`${name}: registry type ${t} is not handled`);
      }
      throw new Error(`RegQueryValueExW ${name}: the value kept growing`);
    });
  }

  set(key: string, name: string, value: RegValue): void {
    this.open(key, (h) => {
      const data =
        (value.type === "sz" ? encodeRegSz(value.data) : encodeDword(value.data)) as Uint8Array<
          ArrayBuffer
        >;
      const rc = api().RegSetValueExW(
        h,
        wide(name),
        0,
        value.type === "sz" ? REG_SZ : REG_DWORD,
        data,
        data.length,
      );
      if (rc !== ERROR_SUCCESS) throw new Error(`RegSetValueExW ${name}: error ${rc}`);
    });
  }

  remove(key: string, name: string): void {
    this.open(key, (h) => {
      const rc = api().RegDeleteValueW(h, wide(name));
      if (rc !== ERROR_SUCCESS && rc !== ERROR_FILE_NOT_FOUND) {
        throw new Error(`RegDeleteValueW ${name}: error ${rc}`);
      }
    });
  }
}
