/**
 * Tells WinINet (and with it Edge, Chrome and other programs that read the
 * system proxy) that the Internet Settings changed: `InternetSetOptionW`
 * with `INTERNET_OPTION_SETTINGS_CHANGED` (39), then
 * `INTERNET_OPTION_REFRESH` (37), from wininet.dll. Windows only.
 * @module
 */

/** `INTERNET_OPTION_SETTINGS_CHANGED`. */
export const INTERNET_OPTION_SETTINGS_CHANGED = 39;
/** `INTERNET_OPTION_REFRESH`. */
export const INTERNET_OPTION_REFRESH = 37;

const WININET = {
  InternetSetOptionW: { parameters: ["pointer", "u32", "pointer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: Deno.DynamicLibrary<typeof WININET> | null = null;

/** Announces changed proxy settings; false when WinINet refused either call. */
export function notifyProxyChanged(): boolean {
  if (Deno.build.os !== "windows") throw new Error("WinINet is only on Windows");
  lib ??= Deno.dlopen("wininet.dll", WININET);
  const a = lib.symbols.InternetSetOptionW(null, INTERNET_OPTION_SETTINGS_CHANGED, null, 0);
  const b = lib.symbols.InternetSetOptionW(null, INTERNET_OPTION_REFRESH, null, 0);
  return a !== 0 && b !== 0;
}
