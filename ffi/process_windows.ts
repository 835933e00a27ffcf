/**
 * Windows socket owners through Deno FFI: `GetExtendedTcpTable` (TCP_TABLE_OWNER_PID_ALL) and
 * `GetExtendedUdpTable` (UDP_TABLE_OWNER_PID) from iphlpapi.dll, for IPv4 and IPv6, and the
 * executable of a PID with `OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION)` +
 * `QueryFullProcessImageNameW` + `CloseHandle` from kernel32.dll.
 *
 * The row decoders are pure functions over the table bytes (tested on hand-built buffers); the
 * DLLs are opened on the first call, and only on Windows.
 * @module
 */

import { formatIPv6 } from "../shared/net/ip.ts";
import { setWindowsProcessAlive } from "../shared/host/journal.ts";

/** `AF_INET` as Windows numbers it. */
export const WIN_AF_INET = 2;
/** `AF_INET6` as Windows numbers it (23, not Linux's 10). */
export const WIN_AF_INET6 = 23;
/** `TCP_TABLE_CLASS.TCP_TABLE_OWNER_PID_ALL`. */
export const TCP_TABLE_OWNER_PID_ALL = 5;
/** `UDP_TABLE_CLASS.UDP_TABLE_OWNER_PID`. */
export const UDP_TABLE_OWNER_PID = 1;
/** `ERROR_INSUFFICIENT_BUFFER`. */
export const ERROR_INSUFFICIENT_BUFFER = 122;
/** `PROCESS_QUERY_LIMITED_INFORMATION` access right. */
export const PROCESS_QUERY_LIMITED_INFORMATION = 0x1000;
/** `MIB_TCP_STATE_LISTEN`. */
export const MIB_TCP_STATE_LISTEN = 2;
/** `MIB_TCP_STATE_ESTAB`. */
export const MIB_TCP_STATE_ESTAB = 5;

/** `sizeof(MIB_TCPROW_OWNER_PID)`: state, local addr, local port, remote addr, remote port, pid. */
export const TCP4_ROW_SIZE = 24;
/** `sizeof(MIB_TCP6ROW_OWNER_PID)`: addr[16], scope, port, addr[16], scope, port, state, pid. */
export const TCP6_ROW_SIZE = 56;
/** `sizeof(MIB_UDPROW_OWNER_PID)`: local addr, local port, pid. */
export const UDP4_ROW_SIZE = 12;
/** `sizeof(MIB_UDP6ROW_OWNER_PID)`: addr[16], scope, port, pid. */
export const UDP6_ROW_SIZE = 28;

/** One socket with its owner, decoded from a table row. */
export interface OwnerRow {
  local: { host: string; port: number };
  /** `0.0.0.0:0` / `:::0` for UDP and listening TCP sockets. */
  remote: { host: string; port: number };
  /** `MIB_TCP_STATE` (1 CLOSED … 5 ESTAB … 12 DELETE_TCB); 0 for UDP. */
  state: number;
  pid: number;
}

/** The table bytes do not hold the rows their header announces. */
export class TableFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TableFormatError";
  }
}

/**
 * A port from a DWORD that holds it in network byte order in its low 16 bits (the upper 16 bits
 * may be garbage): in memory, the first two bytes, big-endian.
 */
export function portFromDword(b: Uint8Array, off: number): number {
  return (b[off] << 8) | b[off + 1];
}

function ipv4At(b: Uint8Array, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

function ipv6At(b: Uint8Array, off: number): string {
  return formatIPv6(b.subarray(off, off + 16));
}

function rowsOf(b: Uint8Array, rowSize: number, what: string): { view: DataView; count: number } {
  if (b.length < 4) throw new TableFormatError(`${what}: ${b.length} bytes, no entry count`);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const count = view.getUint32(0, true);
  if (4 + count * rowSize > b.length) {
    throw new TableFormatError(
      `${what}: ${count} rows need ${4 + count * rowSize} bytes, got ${b.length}`,
    );
  }
  return { view, count };
}

/** Decodes a `MIB_TCPTABLE_OWNER_PID` (AF_INET, `TCP_TABLE_OWNER_PID_*`). */
export function parseTcp4Table(b: Uint8Array): OwnerRow[] {
  const { view, count } = rowsOf(b, TCP4_ROW_SIZE, "MIB_TCPTABLE_OWNER_PID");
  const out: OwnerRow[] = [];
  for (let i = 0, o = 4; i < count; i++, o += TCP4_ROW_SIZE) {
    out.push({
      state: view.getUint32(o, true),
      local: { host: ipv4At(b, o + 4), port: portFromDword(b, o + 8) },
      remote: { host: ipv4At(b, o + 12), port: portFromDword(b, o + 16) },
      pid: view.getUint32(o + 20, true),
    });
  }
  return out;
}

/** Decodes a `MIB_TCP6TABLE_OWNER_PID` (AF_INET6, `TCP_TABLE_OWNER_PID_*`). */
export function parseTcp6Table(b: Uint8Array): OwnerRow[] {
  const { view, count } = rowsOf(b, TCP6_ROW_SIZE, "MIB_TCP6TABLE_OWNER_PID");
  const out: OwnerRow[] = [];
  for (let i = 0, o = 4; i < count; i++, o += TCP6_ROW_SIZE) {
    out.push({
      local: { host: ipv6At(b, o), port: portFromDword(b, o + 20) },
      remote: { host: ipv6At(b, o + 24), port: portFromDword(b, o + 44) },
      state: view.getUint32(o + 48, true),
      pid: view.getUint32(o + 52, true),
    });
  }
  return out;
}

/** Decodes a `MIB_UDPTABLE_OWNER_PID` (AF_INET, `UDP_TABLE_OWNER_PID`). */
export function parseUdp4Table(b: Uint8Array): OwnerRow[] {
  const { view, count } = rowsOf(b, UDP4_ROW_SIZE, "MIB_UDPTABLE_OWNER_PID");
  const out: OwnerRow[] = [];
  for (let i = 0, o = 4; i < count; i++, o += UDP4_ROW_SIZE) {
    out.push({
      local: { host: ipv4At(b, o), port: portFromDword(b, o + 4) },
      remote: { host: "0.0.0.0", port: 0 },
      state: 0,
      pid: view.getUint32(o + 8, true),
    });
  }
  return out;
}

/** Decodes a `MIB_UDP6TABLE_OWNER_PID` (AF_INET6, `UDP_TABLE_OWNER_PID`). */
export function parseUdp6Table(b: Uint8Array): OwnerRow[] {
  const { view, count } = rowsOf(b, UDP6_ROW_SIZE, "MIB_UDP6TABLE_OWNER_PID");
  const out: OwnerRow[] = [];
  for (let i = 0, o = 4; i < count; i++, o += UDP6_ROW_SIZE) {
    out.push({
      local: { host: ipv6At(b, o), port: portFromDword(b, o + 20) },
      remote: { host: "::", port: 0 },
      state: 0,
      pid: view.getUint32(o + 24, true),
    });
  }
  return out;
}

/** `chars` UTF-16LE code units of `b` as a string (a path from a `W` function). */
export function decodeUtf16(b: Uint8Array, chars: number): string {
  const n = Math.max(0, Math.min(chars * 2, b.length & ~1));
  return new TextDecoder("utf-16le").decode(b.subarray(0, n));
}

const IPHLPAPI = {
  GetExtendedTcpTable: {
    parameters: ["buffer", "buffer", "i32", "u32", "u32", "u32"],
    result: "u32",
    nonblocking: true,
  },
  GetExtendedUdpTable: {
    parameters: ["buffer", "buffer", "i32", "u32", "u32", "u32"],
    result: "u32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

const KERNEL32 = {
  OpenProcess: { parameters: ["u32", "i32", "u32"], result: "pointer" },
  QueryFullProcessImageNameW: {
    parameters: ["pointer", "u32", "buffer", "buffer"],
    result: "i32",
  },
  CloseHandle: { parameters: ["pointer"], result: "i32" },
  GetExitCodeProcess: { parameters: ["pointer", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** `STILL_ACTIVE`: the exit code of a process that has not exited. */
export const STILL_ACTIVE = 259;

let iphlpapi: Deno.DynamicLibrary<typeof IPHLPAPI> | null = null;
let kernel32: Deno.DynamicLibrary<typeof KERNEL32> | null = null;

function requireWindows(): void {
  if (Deno.build.os !== "windows") throw new Error("process lookup FFI is only for Windows");
}

function ip(): Deno.DynamicLibrary<typeof IPHLPAPI>["symbols"] {
  requireWindows();
  iphlpapi ??= Deno.dlopen("iphlpapi.dll", IPHLPAPI);
  return iphlpapi.symbols;
}

function k32(): Deno.DynamicLibrary<typeof KERNEL32>["symbols"] {
  requireWindows();
  kernel32 ??= Deno.dlopen("kernel32.dll", KERNEL32);
  return kernel32.symbols;
}

type TableCall = (
  table: Uint8Array<ArrayBuffer>,
  size: Uint8Array<ArrayBuffer>,
  order: number,
  af: number,
  tableClass: number,
  reserved: number,
) => Promise<number>;

/**
 * Calls a `GetExtended*Table` function until the buffer is big enough (it answers
 * `ERROR_INSUFFICIENT_BUFFER` with the size it needs; the table may grow between calls).
 */
async function fetchTable(call: TableCall, af: number, tableClass: number): Promise<Uint8Array> {
  const size = new Uint8Array(4);
  const sv = new DataView(size.buffer);
  let buf = new Uint8Array(16 * 1024);
  for (let attempt = 0; attempt < 8; attempt++) {
    sv.setUint32(0, buf.length, true);
    const rc = await call(buf, size, 0, af, tableClass, 0);
    if (rc === 0) return buf; // the header's count bounds the rows
    if (rc !== ERROR_INSUFFICIENT_BUFFER) throw new Error(`GetExtended*Table: error ${rc}`);
    const need = sv.getUint32(0, true);
    buf = new Uint8Array(Math.max(need + (need >> 3) + 1024, buf.length * 2));
  }
  throw new Error("GetExtended*Table: the table kept growing");
}

/** The TCP sockets of family `af` (`WIN_AF_INET`/`WIN_AF_INET6`), all states, with owner PIDs. */
export async function readTcpTable(af: number): Promise<OwnerRow[]> {
  const s = ip();
  const b = await fetchTable(s.GetExtendedTcpTable, af, TCP_TABLE_OWNER_PID_ALL);
  return af === WIN_AF_INET6 ? parseTcp6Table(b) : parseTcp4Table(b);
}

/** The UDP sockets of family `af` with owner PIDs. */
export async function readUdpTable(af: number): Promise<OwnerRow[]> {
  const s = ip();
  const b = await fetchTable(s.GetExtendedUdpTable, af, UDP_TABLE_OWNER_PID);
  return af === WIN_AF_INET6 ? parseUdp6Table(b) : parseUdp4Table(b);
}

/** Longest Windows path in UTF-16 code units (extended-length paths). */
const MAX_PATH_CHARS = 32768;
let pathBuf: Uint8Array<ArrayBuffer> | null = null;

/**
 * The full Win32 path of process `pid`'s executable, or `null` when it cannot be opened (gone,
 * PID 0, protected processes).
 */
export function processImagePath(pid: number): string | null {
  if (pid === 0) return null;
  const s = k32();
  const h = s.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
  if (h === null) return null;
  try {
    pathBuf ??= new Uint8Array(MAX_PATH_CHARS * 2);
    const size = new Uint8Array(4);
    const sv = new DataView(size.buffer);
    sv.setUint32(0, MAX_PATH_CHARS, true);
    if (s.QueryFullProcessImageNameW(h, 0, pathBuf, size) === 0) return null;
    return decodeUtf16(pathBuf, sv.getUint32(0, true));
  } finally {
    s.CloseHandle(h);
  }
}

/**
 * True while process `pid` runs (OpenProcess + GetExitCodeProcess = STILL_ACTIVE); a process
 * that cannot be opened for another reason than not existing counts as alive.
 */
export function windowsProcessAlive(pid: number): boolean {
  const s = k32();
  const h = s.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
  if (h === null) return false;
  try {
    const code = new Uint8Array(4);
    if (s.GetExitCodeProcess(h, code) === 0) return true;
    return new DataView(code.buffer).getUint32(0, true) === STILL_ACTIVE;
  } finally {
    s.CloseHandle(h);
  }
}

if (Deno.build.os === "windows") setWindowsProcessAlive(windowsProcessAlive);
