/**
 * Linux process lookup from `/proc`: the client program's socket is found in `/proc/net/tcp`,
 * `tcp6`, `udp` or `udp6` (only the tables the address family needs), its inode's owner among
 * the `/proc/PID/fd/*` links (`socket:[inode]`), the name from `/proc/PID/exe` (or `comm`,
 * truncated to 15 bytes by the kernel, when `exe` cannot be read).
 *
 * Pure parts (line decoding, the streaming table matcher, link parsing) are separate from the
 * I/O in `LinuxProcessResolver`, which batches concurrent lookups into one pass over each table
 * and one walk over `/proc`, keeps an inode → (pid, fd) index verified with one `readlink`, tries
 * recently seen owners first, yields to the event loop every few milliseconds of work, and
 * answers `null` at its deadline.
 * @module
 */

import {
  canonicalIPv6Bytes,
  DEFAULT_CACHE_TTL_MS,
  DEFAULT_LOOKUP_TIMEOUT_MS,
  type Endpoint,
  EXACT_LOCAL,
  EXACT_MATCH,
  LookupCache,
  type PreparedQuery,
  prepareQuery,
  type ProcessInfo,
  type ProcessQuery,
  type ProcessResolver,
  type ProcessResolverOptions,
  queryKey,
  socketMatchScore,
} from "./process.ts";

/** A `/proc/net` socket table. */
export type ProcNetTable = "tcp" | "tcp6" | "udp" | "udp6";

/** `st` values of `/proc/net/tcp*` (include/net/tcp_states.h). */
export const TCP_ESTABLISHED = 0x01;
/** Sockets in TIME_WAIT have no owner (inode 0). */
export const TCP_TIME_WAIT = 0x06;
/** A listening socket. */
export const TCP_LISTEN = 0x0a;

/** One row of a `/proc/net` table. */
export interface ProcSocket {
  table: ProcNetTable;
  /** Hosts are canonical (`canonicalHost`): an IPv4-mapped address reads as IPv4. */
  local: Endpoint;
  remote: Endpoint;
  /** `st` column (TCP state; 7 = unconnected for UDP). */
  state: number;
  uid: number;
  /** Socket inode as printed (decimal); `"0"` for sockets without one (TIME_WAIT). */
  inode: string;
}

/** Whether this host stores integers little-endian (how `/proc/net` words are printed). */
export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

const HEX8 = /^[0-9A-Fa-f]{8}$/;
const HEX32 = /^[0-9A-Fa-f]{32}$/;
const HEX4 = /^[0-9A-Fa-f]{4}$/;

/**
 * Decodes a `/proc/net` address `ADDR:PORT`: ADDR is 8 hex digits (IPv4) or 32 (IPv6), each
 * 32-bit word printed as a host-order integer; PORT 4 hex digits in natural order. The host is
 * canonical (`::ffff:a.b.c.d` → `a.b.c.d`). `null` when malformed.
 */
export function decodeProcAddress(
  field: string,
  littleEndian: boolean = HOST_LITTLE_ENDIAN,
): Endpoint | null {
  const c = field.indexOf(":");
  if (c === -1) return null;
  const a = field.slice(0, c);
  const p = field.slice(c + 1);
  if (!HEX4.test(p)) return null;
  const port = parseInt(p, 16);
  if (HEX8.test(a)) {
    const b = wordBytes(a, 0, littleEndian);
    return { host: `${b[0]}.${b[1]}.${b[2]}.${b[3]}`, port };
  }
  if (!HEX32.test(a)) return null;
  const bytes = new Uint8Array(16);
  for (let w = 0; w < 4; w++) bytes.set(wordBytes(a, w * 8, littleEndian), w * 4);
  return { host: canonicalIPv6Bytes(bytes), port };
}

/** The 4 memory bytes of the word printed at `hex[off..off+8]`. */
function wordBytes(hex: string, off: number, littleEndian: boolean): number[] {
  const b = [0, 2, 4, 6].map((i) => parseInt(hex.slice(off + i, off + i + 2), 16));
  return littleEndian ? b.reverse() : b;
}

/**
 * Decodes one row of `/proc/net/{tcp,tcp6,udp,udp6}`; `null` for the header, blank or malformed
 * lines. Columns: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode …`.
 */
export function parseProcNetLine(
  line: string,
  table: ProcNetTable,
  littleEndian: boolean = HOST_LITTLE_ENDIAN,
): ProcSocket | null {
  const f = line.trim().split(/\s+/);
  if (f.length < 10 || !/^\d+:$/.test(f[0])) return null;
  const local = decodeProcAddress(f[1], littleEndian);
  const remote = decodeProcAddress(f[2], littleEndian);
  if (!local || !remote || !/^[0-9A-Fa-f]{2}$/.test(f[3])) return null;
  if (!/^\d+$/.test(f[7]) || !/^\d+$/.test(f[9])) return null;
  return { table, local, remote, state: parseInt(f[3], 16), uid: Number(f[7]), inode: f[9] };
}

/** Every row of a `/proc/net` table's text. */
export function parseProcNet(
  text: string,
  table: ProcNetTable,
  littleEndian: boolean = HOST_LITTLE_ENDIAN,
): ProcSocket[] {
  const out: ProcSocket[] = [];
  for (const line of text.split("\n")) {
    const s = parseProcNetLine(line, table, littleEndian);
    if (s) out.push(s);
  }
  return out;
}

/**
 * The tables that may hold the client's socket, in the order to read them: an IPv4 client
 * (also when we saw it IPv4-mapped) has an AF_INET socket, or an AF_INET6 one talking to a
 * mapped address; an IPv6 client only an AF_INET6 one.
 */
export function tablesFor(q: PreparedQuery): ProcNetTable[] {
  if (q.network === "tcp") return q.v4 ? ["tcp", "tcp6"] : ["tcp6"];
  return q.v4 ? ["udp", "udp6"] : ["udp6"];
}

/** Local port of a row without decoding the rest, or -1. */
function localPortOf(line: string): number {
  const c = line.indexOf(": ");
  if (c === -1) return -1;
  let i = c + 2;
  while (line.charCodeAt(i) === 32) i++;
  const end = line.indexOf(" ", i);
  if (end - i !== 13 && end - i !== 37) return -1;
  return parseInt(line.slice(end - 4, end), 16);
}

/**
 * Sans-I/O matcher over one table's text, for several queries at once: feed the text in chunks
 * of any size (`push`), call `end`, read `result(i)`. Rows without an inode are skipped; a
 * query stops looking once it has a match that cannot be beaten, and `done` turns true when all
 * have. Only rows whose local port some query wants are decoded.
 */
export class ProcNetMatcher {
  readonly #queries: readonly PreparedQuery[];
  readonly #byPort = new Map<number, number[]>();
  readonly #best: (ProcSocket | null)[];
  readonly #score: number[];
  #partial = "";
  #open: number;
  /** Rows looked at. */
  rows = 0;

  /** Matches `queries` against `table` (whose endianness is `littleEndian`). */
  constructor(
    readonly table: ProcNetTable,
    queries: readonly PreparedQuery[],
    readonly littleEndian: boolean = HOST_LITTLE_ENDIAN,
  ) {
    this.#queries = queries;
    this.#best = queries.map(() => null);
    this.#score = queries.map(() => 0);
    this.#open = queries.length;
    queries.forEach((q, i) => {
      const l = this.#byPort.get(q.localPort);
      if (l) l.push(i);
      else this.#byPort.set(q.localPort, [i]);
    });
  }

  /** Whether every query has its best possible match. */
  get done(): boolean {
    return this.#open === 0;
  }

  /** Feeds text; returns `done`. */
  push(chunk: string): boolean {
    const text = this.#partial + chunk;
    let start = 0;
    for (;;) {
      const nl = text.indexOf("\n", start);
      if (nl === -1) break;
      this.#line(text.slice(start, nl));
      start = nl + 1;
      if (this.#open === 0) {
        this.#partial = "";
        return true;
      }
    }
    this.#partial = text.slice(start);
    return this.#open === 0;
  }

  /** Ends the text (a last line without a newline counts). */
  end(): void {
    if (this.#partial !== "") this.#line(this.#partial);
    this.#partial = "";
  }

  /** The best row for query `i`, or `null`. */
  result(i: number): ProcSocket | null {
    return this.#best[i];
  }

  #line(line: string): void {
    this.rows++;
    const port = localPortOf(line);
    const want = port >= 0 ? this.#byPort.get(port) : undefined;
    if (!want) return;
    const row = parseProcNetLine(line, this.table, this.littleEndian);
    if (!row || row.inode === "0") return;
    for (const i of want) {
      const q = this.#queries[i];
      const final = q.network === "tcp" ? EXACT_MATCH : EXACT_LOCAL;
      if (this.#score[i] >= final) continue;
      const s = socketMatchScore(
        q,
        row.local.host,
        row.local.port,
        row.remote.host,
        row.remote.port,
      );
      if (s > this.#score[i]) {
        this.#score[i] = s;
        this.#best[i] = row;
        if (s >= final) this.#open--;
      }
    }
  }
}

/** The inode of a `/proc/PID/fd/N` link target `socket:[12345]`, or `null`. */
export function parseSocketLink(target: string): string | null {
  if (!target.startsWith("socket:[") || !target.endsWith("]")) return null;
  const n = target.slice(8, -1);
  return /^\d+$/.test(n) ? n : null;
}

/**
 * Name and path from a `/proc/PID/exe` link target; the kernel appends ` (deleted)` when the
 * file was removed or replaced since the process started.
 */
export function exeInfo(target: string): { name: string; path: string } {
  const path = target.endsWith(" (deleted)") ? target.slice(0, -10) : target;
  const i = path.lastIndexOf("/");
  return { name: i === -1 ? path : path.slice(i + 1), path };
}

/** An open `/proc` file, read in chunks. */
export interface ProcFile {
  /** Bytes read into `buf`, or `null` at the end. */
  read(buf: Uint8Array): Promise<number | null>;
  close(): void;
}

/**
 * The file access the resolver needs, so that it can be served by something other than Deno's
 * file API (which wants `--allow-all` for `/proc`: see `ProcAccessError`). Every method answers
 * `null` for a path that vanished or may not be read (ENOENT, EACCES, ESRCH races) and throws
 * only when the whole of `/proc` is out of reach.
 */
export interface ProcFs {
  /** Opens a file for streaming reads. */
  open(path: string): Promise<ProcFile | null>;
  /** Entry names of a directory. */
  readDir(path: string): string[] | null;
  /** A symbolic link's target. */
  readLink(path: string): string | null;
  /** A small text file's contents. */
  readText(path: string): string | null;
}

/**
 * Deno refused to read `/proc`: since Deno 2 it asks for `--allow-all` there (`--allow-read` is
 * not enough, as `/proc` can reach around the sandbox). `selectProcFs` avoids this with
 * `--allow-ffi` (libc reads `/proc`); without it, process rules on Linux need `--allow-all`.
 */
export class ProcAccessError extends Error {
  constructor(path: string, options?: ErrorOptions) {
    super(
      `process lookup cannot read ${path}: Deno requires --allow-all for /proc ` +
        "(process rules need the client run with --allow-ffi or --allow-all)",
      options,
    );
    this.name = "ProcAccessError";
  }
}

function procGuard<T>(path: string, f: () => T): T | null {
  try {
    return f();
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw new ProcAccessError(path, { cause: e });
    return null; // gone, or not ours to read
  }
}

/** `ProcFs` over Deno's file API (needs `--allow-all` for the real `/proc`). */
export const denoProcFs: ProcFs = {
  async open(path) {
    try {
      const f = await Deno.open(path);
      return { read: (buf) => f.read(buf), close: () => f.close() };
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable) throw new ProcAccessError(path, { cause: e });
      return null;
    }
  },
  readDir: (path) =>
    procGuard(path, () => {
      const out: string[] = [];
      for (const e of Deno.readDirSync(path)) out.push(e.name);
      return out;
    }),
  readLink: (path) => procGuard(path, () => Deno.readLinkSync(path)),
  readText: (path) => procGuard(path, () => Deno.readTextFileSync(path)),
};

/** What `selectProcFs` looks at, injectable for tests. */
export interface ProcFsProbe {
  /** Whether `--allow-ffi` is granted (asked without a prompt). */
  ffiGranted(): boolean;
  /** Whether Deno's file API may read `root` (false when it throws `NotCapable`). */
  denoReads(root: string): boolean;
  /** The FFI `ProcFs` (`ffi/procfs_linux.ts`); rejects when libc cannot be opened. */
  loadFfi(): Promise<ProcFs>;
}

/** The real checks: permission queries, one `readlink` of `ROOT/self/exe`, `LibcProcFs`. */
export const defaultProcFsProbe: ProcFsProbe = {
  ffiGranted: () => Deno.permissions.querySync({ name: "ffi" }).state === "granted",
  denoReads(root) {
    // Without read permission the probe itself would prompt: report "not readable" instead.
    if (Deno.permissions.querySync({ name: "read", path: root }).state !== "granted") return false;
    try {
      Deno.readLinkSync(`${root}/self/exe`);
      return true;
    } catch (e) {
      // Only Deno's guard is a reason to switch; a missing /proc is missing for libc too.
      return !(e instanceof Deno.errors.NotCapable);
    }
  },
  loadFfi: async () => (await import("../../ffi/procfs_linux.ts")).libcProcFs(),
};

/**
 * The `ProcFs` to read `root` with: libc through FFI when `--allow-ffi` is granted and Deno's
 * file API may not read `/proc` (the client runs with `--allow-read`, not `--allow-all`), else
 * `denoProcFs` (also when libc cannot be opened; lookups then reject with `ProcAccessError`).
 */
export async function selectProcFs(
  root = "/proc",
  probe: ProcFsProbe = defaultProcFsProbe,
): Promise<ProcFs> {
  if (!probe.ffiGranted() || probe.denoReads(root)) return denoProcFs;
  try {
    return await probe.loadFfi();
  } catch {
    return denoProcFs;
  }
}

/** Options of the Linux resolver. */
export interface LinuxProcessResolverOptions extends ProcessResolverOptions {
  /** Where procfs is mounted. Default `/proc`. */
  procRoot?: string;
  /** How to read it. Default `denoProcFs`; `createProcessResolver` passes `selectProcFs()`. */
  fs?: ProcFs;
  /** Synchronous work between two yields to the event loop, in ms. Default 4. */
  sliceMs?: number;
  /** Most `/proc/PID/fd` links read per pass. Default 200 000. */
  maxLinksPerPass?: number;
  /** Byte order the tables are printed in. Default: this host's. */
  littleEndian?: boolean;
  /** Milliseconds clock. Default `performance.now`. */
  clock?: () => number;
}

/** Counters, for measurements and status output. */
export interface LinuxProcessStats {
  lookups: number;
  cacheHits: number;
  found: number;
  notFound: number;
  timeouts: number;
  /** Batches of lookups served together. */
  passes: number;
  tableReads: number;
  tableBytes: number;
  pidsScanned: number;
  linksRead: number;
  /** Owners answered from the inode index (verified with one readlink). */
  indexHits: number;
}

interface Pending {
  q: PreparedQuery;
  key: string;
  settled: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  resolve: (v: ProcessInfo | null) => void;
  reject: (e: unknown) => void;
}

const TABLE_ORDER: readonly ProcNetTable[] = ["tcp", "tcp6", "udp", "udp6"];
const MAX_HINTS = 8;
const MAX_INDEX = 65536;
const LINKS_PER_TICK = 256;

/** Yields to the event loop once `sliceMs` of synchronous work has passed. */
class Slicer {
  #since: number;
  #chan: MessageChannel | null = null;
  #wake: (() => void) | null = null;

  constructor(readonly sliceMs: number, readonly clock: () => number) {
    this.#since = clock();
  }

  async tick(): Promise<void> {
    if (this.clock() - this.#since < this.sliceMs) return;
    if (!this.#chan) {
      this.#chan = new MessageChannel();
      this.#chan.port1.onmessage = () => this.#wake?.();
    }
    const chan = this.#chan;
    // A message event is a task: timers and I/O of other connections run before it.
    await new Promise<void>((r) => {
      this.#wake = r;
      chan.port2.postMessage(0);
    });
    this.#since = this.clock();
  }

  close(): void {
    this.#chan?.port1.close();
    this.#chan?.port2.close();
    this.#chan = null;
  }
}

/**
 * `ProcessResolver` over `/proc`. Through `denoProcFs` (the default) it needs `--allow-all`, as
 * Deno 2 guards `/proc`; through `LibcProcFs` (`ffi/procfs_linux.ts`) `--allow-ffi`. It sees the
 * processes whose `/proc/PID/fd` this user may read (all as root, its own otherwise) in this PID
 * and network namespace. `lookup` resolves `null` rather
 * than wait past `timeoutMs`; it rejects only when `/proc` is out of reach (`ProcAccessError`).
 */
export class LinuxProcessResolver implements ProcessResolver {
  /** Counters since construction. */
  readonly stats: LinuxProcessStats = {
    lookups: 0,
    cacheHits: 0,
    found: 0,
    notFound: 0,
    timeouts: 0,
    passes: 0,
    tableReads: 0,
    tableBytes: 0,
    pidsScanned: 0,
    linksRead: 0,
    indexHits: 0,
  };
  readonly #root: string;
  readonly #fs: ProcFs;
  readonly #timeoutMs: number;
  readonly #sliceMs: number;
  readonly #maxLinks: number;
  readonly #le: boolean;
  readonly #clock: () => number;
  readonly #cache: LookupCache;
  /** inode → where it was last seen. */
  readonly #index = new Map<string, { pid: number; fd: string }>();
  /** Recent owners, most recent first: tried before the rest of `/proc`. */
  #hints: number[] = [];
  #queue: Pending[] = [];
  #running = false;
  readonly #buf = new Uint8Array(64 * 1024);

  /** Reads nothing until the first lookup. */
  constructor(options: LinuxProcessResolverOptions = {}) {
    this.#root = options.procRoot ?? "/proc";
    this.#fs = options.fs ?? denoProcFs;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_LOOKUP_TIMEOUT_MS;
    this.#sliceMs = options.sliceMs ?? 4;
    this.#maxLinks = options.maxLinksPerPass ?? 200_000;
    this.#le = options.littleEndian ?? HOST_LITTLE_ENDIAN;
    this.#clock = options.clock ?? (() => performance.now());
    this.#cache = new LookupCache(options.cacheTtlMs ?? DEFAULT_CACHE_TTL_MS);
  }

  /** See `ProcessResolver.lookup`. */
  lookup(q: ProcessQuery): Promise<ProcessInfo | null> {
    this.stats.lookups++;
    const p = prepareQuery(q);
    if (!p) return Promise.resolve(null);
    const key = queryKey(p);
    const hit = this.#cache.get(key, this.#clock());
    if (hit) {
      this.stats.cacheHits++;
      return Promise.resolve(hit);
    }
    return new Promise((resolve, reject) => {
      const item: Pending = { q: p, key, settled: false, timer: undefined, resolve, reject };
      item.timer = setTimeout(() => {
        if (item.settled) return;
        item.settled = true;
        this.stats.timeouts++;
        resolve(null);
      }, this.#timeoutMs);
      this.#queue.push(item);
      if (!this.#running) {
        // Start on a microtask, so lookups issued in the same tick share one pass.
        this.#running = true;
        queueMicrotask(() => void this.#pump());
      }
    });
  }

  #settle(item: Pending, info: ProcessInfo | null): void {
    if (item.settled) return;
    item.settled = true;
    clearTimeout(item.timer);
    if (info) {
      this.stats.found++;
      this.#cache.set(item.key, info, this.#clock());
    } else this.stats.notFound++;
    item.resolve(info);
  }

  async #pump(): Promise<void> {
    const slicer = new Slicer(this.#sliceMs, this.#clock);
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.filter((x) => !x.settled);
        this.#queue = [];
        if (batch.length === 0) continue;
        this.stats.passes++;
        try {
          await this.#pass(batch, slicer);
        } catch (e) {
          for (const x of batch) {
            if (x.settled) continue;
            x.settled = true;
            clearTimeout(x.timer);
            x.reject(e);
          }
        }
      }
    } finally {
      slicer.close();
      this.#running = false;
    }
  }

  async #pass(batch: Pending[], slicer: Slicer): Promise<void> {
    const live = () => batch.some((x) => !x.settled);
    const rows = new Map<Pending, ProcSocket>();
    for (const table of TABLE_ORDER) {
      const qs = batch.filter((x) => !x.settled && !rows.has(x) && tablesFor(x.q).includes(table));
      if (qs.length === 0) continue;
      const m = new ProcNetMatcher(table, qs.map((x) => x.q), this.#le);
      await this.#readTable(table, m, slicer, live);
      qs.forEach((x, i) => {
        const r = m.result(i);
        if (r) rows.set(x, r);
      });
    }
    for (const x of batch) if (!rows.has(x)) this.#settle(x, null);
    if (rows.size === 0) return;
    const owners = await this.#owners(
      new Set([...rows.values()].map((r) => r.inode)),
      slicer,
      live,
    );
    const names = new Map<number, ProcessInfo | null>();
    for (const [x, r] of rows) {
      const pid = owners.get(r.inode);
      let info: ProcessInfo | null = null;
      if (pid !== undefined) {
        if (!names.has(pid)) names.set(pid, this.#processInfo(pid));
        info = names.get(pid) ?? null;
      }
      this.#settle(x, info);
    }
  }

  /** Streams one table through the matcher, stopping early when it is done. */
  async #readTable(
    table: ProcNetTable,
    m: ProcNetMatcher,
    slicer: Slicer,
    live: () => boolean,
  ): Promise<void> {
    const file = await this.#fs.open(`${this.#root}/net/${table}`);
    if (!file) return; // no IPv6 in this kernel
    this.stats.tableReads++;
    const dec = new TextDecoder();
    try {
      for (;;) {
        // Asynchronous: one read can spend milliseconds walking the kernel's socket hash.
        const n = await file.read(this.#buf);
        if (n === null) break;
        this.stats.tableBytes += n;
        if (m.push(dec.decode(this.#buf.subarray(0, n), { stream: true }))) return;
        await slicer.tick();
        if (!live()) return;
      }
      m.end();
    } finally {
      file.close();
    }
  }

  /** Owner PIDs of `wanted` inodes: index first, then recent owners, then `/proc` newest first. */
  async #owners(
    wanted: Set<string>,
    slicer: Slicer,
    live: () => boolean,
  ): Promise<Map<string, number>> {
    const found = new Map<string, number>();
    for (const inode of wanted) {
      const e = this.#index.get(inode);
      if (e && this.#readLink(`${this.#root}/${e.pid}/fd/${e.fd}`) === `socket:[${inode}]`) {
        found.set(inode, e.pid);
        this.stats.indexHits++;
      }
    }
    if (found.size === wanted.size) return found;
    if (this.#index.size > MAX_INDEX) this.#index.clear();
    const seen = new Set<number>();
    let links = 0;
    const scan = async (pid: number): Promise<boolean> => {
      seen.add(pid);
      links += await this.#scanPid(pid, wanted, found, slicer);
      return found.size === wanted.size || links >= this.#maxLinks || !live();
    };
    for (const pid of [...this.#hints]) if (await scan(pid)) return found;
    for (const pid of this.#listPids()) {
      if (seen.has(pid)) continue;
      if (await scan(pid)) return found;
      await slicer.tick();
    }
    return found;
  }

  /** Numeric entries of `/proc`, highest (usually newest) first. */
  #listPids(): number[] {
    const pids: number[] = [];
    const names = this.#fs.readDir(this.#root);
    if (names === null) throw new Error(`process lookup cannot list ${this.#root}`);
    for (const name of names) {
      const c = name.charCodeAt(0);
      if (c >= 48 && c <= 57 && /^\d+$/.test(name)) pids.push(Number(name));
    }
    return pids.sort((a, b) => b - a);
  }

  /** Reads `/proc/PID/fd`, indexing its sockets; returns the number of links read. */
  async #scanPid(
    pid: number,
    wanted: Set<string>,
    found: Map<string, number>,
    slicer: Slicer,
  ): Promise<number> {
    const dir = `${this.#root}/${pid}/fd`;
    const names = this.#fs.readDir(dir);
    if (names === null) return 0; // gone, or not ours to read
    this.stats.pidsScanned++;
    let n = 0;
    for (const fd of names) {
      const inode = parseSocketLink(this.#readLink(`${dir}/${fd}`) ?? "");
      n++;
      if (inode !== null) {
        this.#index.set(inode, { pid, fd });
        if (wanted.has(inode) && !found.has(inode)) {
          found.set(inode, pid);
          this.#hint(pid);
          if (found.size === wanted.size) break;
        }
      }
      if (n % LINKS_PER_TICK === 0) await slicer.tick();
    }
    this.stats.linksRead += n;
    return n;
  }

  #hint(pid: number): void {
    this.#hints = [pid, ...this.#hints.filter((p) => p !== pid)].slice(0, MAX_HINTS);
  }

  #readLink(path: string): string | null {
    return this.#fs.readLink(path);
  }

  /** Name (from `exe`, else `comm`) and path of `pid`, or `null` if it is gone. */
  #processInfo(pid: number): ProcessInfo | null {
    const exe = this.#readLink(`${this.#root}/${pid}/exe`);
    if (exe !== null && exe !== "") return { pid, ...exeInfo(exe) };
    // comm is at most 15 bytes: a longer executable name arrives cut.
    const comm = this.#fs.readText(`${this.#root}/${pid}/comm`)?.replace(/\n$/, "") ?? "";
    return comm === "" ? null : { pid, name: comm };
  }
}
