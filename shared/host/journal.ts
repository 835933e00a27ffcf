/**
 * The host-change journal (DESIGN principle 7): every change a daemon makes
 * to the machine — a route, a rule, an address, a firewall table, a resolver
 * setting, a file — is written to a journal on disk, with how to undo it,
 * *before* it is made. A clean exit undoes everything in reverse order; after
 * a crash (kill -9, power loss) the next start, or `down`, finds the journal
 * and undoes the leftovers. Every capability that touches the host (TUN
 * auto-route, the proxy VPN's kill switch, the layer-3 VPN's NAT, the Windows
 * system proxy) goes through this one module, so undo after a crash is
 * written once.
 *
 * The journal is a file of JSON lines: a header naming the owner process,
 * then an `intent` record per change (written and synced before the change)
 * and an `applied` record after it. A torn last line (a crash mid-write) is
 * ignored. Changes are commands (argv arrays, run without a shell), file
 * replacements (the previous content, or its absence, or a symlink, is kept
 * in the journal and put back) or registry values (the previous value, or
 * "not set", kept and put back).
 * @module
 */

import type { RegistryApi, RegValue } from "./registry.ts";

/** Runs a command without a shell; the journal's only way to change the host. */
export interface CommandRunner {
  /** Runs `argv` to completion: exit code and standard error. */
  run(argv: readonly string[]): Promise<{ code: number; stderr: string }>;
}

/** A change made by running a command, undone by running another. */
export interface CommandChange {
  kind: "command";
  /** What a person reads in logs and in `--dry-run` output. */
  what: string;
  /** The command that makes the change. */
  apply: readonly string[];
  /** The command that takes it back. */
  undo: readonly string[];
  /**
   * The undo may find nothing to do and that is fine: a route through a TUN
   * device vanishes with the device, so after a crash its undo fails quietly.
   */
  undoMayFail?: boolean;
}

/** A file whose content is replaced; undo puts back exactly what was there (or nothing). */
export interface FileChange {
  kind: "file";
  what: string;
  path: string;
  content: string;
}

/**
 * A registry value set (or, with `value` null, removed); undo puts back
 * exactly what was there, "not set" included (the journal's `registry`
 * option does the I/O).
 */
export interface RegistryChange {
  kind: "registry";
  what: string;
  /** The key (`HKCU\Software\Microsoft\Windows\CurrentVersion\Internet Settings`). */
  key: string;
  /** The value's name. */
  name: string;
  /** What it becomes; null: removed. */
  value: RegValue | null;
}

/** One change to the host. */
export type HostChange = CommandChange | FileChange | RegistryChange;

/** What a file (or a registry value) looked like before a change. */
type FileBefore =
  | { type: "absent" }
  | { type: "file"; content: string; mode: number | null }
  | { type: "symlink"; target: string }
  | { type: "registry"; value: RegValue | null };

type Entry =
  | { t: "header"; v: 1; pid: number; started: string; owner: string }
  | { t: "intent"; seq: number; change: HostChange; before?: FileBefore }
  | { t: "applied"; seq: number }
  | { t: "undone"; seq: number };

/** Raised when a change could not be made (the journal still lets it be undone). */
export class HostChangeError extends Error {
  constructor(readonly change: HostChange, detail: string) {
    super(`${change.what}: ${detail}`);
    this.name = "HostChangeError";
  }
}

/** What undoing a journal did: each change undone, and the undo steps that failed. */
export interface UndoReport {
  undone: string[];
  failed: { what: string; error: string }[];
}

/** Runs commands with `Deno.Command` (no shell). */
export const denoRunner: CommandRunner = {
  async run(argv) {
    try {
      const out = await new Deno.Command(argv[0], {
        args: argv.slice(1),
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).output();
      return { code: out.code, stderr: new TextDecoder().decode(out.stderr).trim() };
    } catch (e) {
      return { code: 127, stderr: e instanceof Error ? e.message : String(e) };
    }
  },
};

/** Options of {@link HostJournal.open}. */
export interface JournalOptions {
  /** Runs the commands (default {@link denoRunner}); tests pass a fake. */
  runner?: CommandRunner;
  /** Who owns the journal, for messages ("ostp-client tun0"). */
  owner?: string;
  /**
   * Print every change instead of making it (`--dry-run`): nothing is run,
   * no file is written, no journal is kept.
   */
  dryRun?: (line: string) => void;
  /** This process's id (injectable for tests). */
  pid?: number;
  /** Whether a process is alive (injectable for tests). */
  isAlive?: (pid: number) => boolean;
  /** Makes {@link RegistryChange}s (Windows: `ffi/registry_windows.ts`; tests: a fake). */
  registry?: RegistryApi;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

let windowsAlive: ((pid: number) => boolean) | null = null;

/** Installs the Windows liveness check (`ffi/process_windows.ts` does, when loaded). */
export function setWindowsProcessAlive(fn: (pid: number) => boolean): void {
  windowsAlive = fn;
}

/**
 * True if process `pid` exists: /proc on Linux; on Windows the check
 * `ffi/process_windows.ts` installs (without it: alive, so a live owner is
 * never undone under it).
 */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (Deno.build.os === "windows") return windowsAlive ? windowsAlive(pid) : true;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch (e) {
    // Without /proc access we cannot tell: say alive, so a live owner is never undone under it.
    return !(e instanceof Deno.errors.NotFound);
  }
}

/** The journal of one running capability; create with {@link HostJournal.open}. */
export class HostJournal {
  private seq = 0;
  /** Changes in the order they were made (intent written), with their state. */
  private readonly changes: {
    seq: number;
    change: HostChange;
    before?: FileBefore;
    applied: boolean;
  }[] = [];
  private file: Deno.FsFile | null = null;

  private constructor(
    /** Path of the journal file (null in dry-run mode). */
    readonly path: string | null,
    private readonly runner: CommandRunner,
    private readonly dryRun: ((line: string) => void) | null,
    private readonly registry: RegistryApi | null = null,
  ) {}

  /**
   * Opens a journal at `path` for a new run. Leftovers of a crashed run at
   * the same path are undone first (their report is returned beside the
   * journal); a journal whose owner is still alive is refused.
   */
  static async open(
    path: string,
    opts: JournalOptions = {},
  ): Promise<{ journal: HostJournal; recovered: UndoReport | null }> {
    const runner = opts.runner ?? denoRunner;
    if (opts.dryRun) {
      return { journal: new HostJournal(null, runner, opts.dryRun, null), recovered: null };
    }
    const recovered = await HostJournal.recover(path, opts);
    const dir = path.slice(0, Math.max(0, path.lastIndexOf("/")));
    if (dir) await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const j = new HostJournal(path, runner, null, opts.registry ?? null);
    j.file = await Deno.open(path, { write: true, create: true, truncate: true, mode: 0o600 });
    await j.write({
      t: "header",
      v: 1,
      pid: opts.pid ?? Deno.pid,
      started: new Date().toISOString(),
      owner: opts.owner ?? "ostp",
    });
    return { journal: j, recovered };
  }

  /**
   * Undoes what a previous run left in the journal at `path` (after a crash)
   * and removes the file; null if there was none. Refuses (throws) while the
   * run that wrote it is still alive.
   */
  static async recover(path: string, opts: JournalOptions = {}): Promise<UndoReport | null> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
    const entries = parseJournal(text);
    const header = entries.find((e) => e.t === "header");
    const isAlive = opts.isAlive ?? processAlive;
    const self = opts.pid ?? Deno.pid;
    if (header && header.t === "header" && header.pid !== self && isAlive(header.pid)) {
      throw new Error(
        `${path}: the run that made these host changes (${header.owner}, pid ${header.pid}) ` +
          "is still running; stop it first",
      );
    }
    const j = new HostJournal(path, opts.runner ?? denoRunner, null, opts.registry ?? null);
    const undone = new Set<number>();
    const applied = new Set<number>();
    for (const e of entries) {
      if (e.t === "applied") applied.add(e.seq);
      if (e.t === "undone") undone.add(e.seq);
    }
    for (const e of entries) {
      if (e.t !== "intent") continue;
      // A change whose "applied" record is missing may or may not have been made
      // (the crash came between): undo it anyway, and let its undo fail quietly.
      j.changes.push({
        seq: e.seq,
        change: e.change,
        before: e.before,
        applied: applied.has(e.seq),
      });
    }
    j.changes.splice(0, j.changes.length, ...j.changes.filter((c) => !undone.has(c.seq)));
    const report = await j.undoChanges();
    await Deno.remove(path).catch(() => {});
    return report;
  }

  /** Changes recorded and not yet undone. */
  get size(): number {
    return this.changes.length;
  }

  /**
   * Records `change` (synced to disk), then makes it.
   * @throws {HostChangeError} when the change failed (it stays in the journal: undo is harmless).
   */
  async apply(change: HostChange): Promise<void> {
    if (this.dryRun) {
      this.dryRun(describe(change));
      return;
    }
    const seq = ++this.seq;
    const before = change.kind === "file"
      ? await readBefore(change.path)
      : change.kind === "registry"
      ? { type: "registry" as const, value: this.reg(change).get(change.key, change.name) }
      : undefined;
    const rec = { seq, change, before, applied: false };
    await this.write({ t: "intent", seq, change, before });
    this.changes.push(rec);
    if (change.kind === "command") {
      const r = await this.runner.run(change.apply);
      if (r.code !== 0) {
        throw new HostChangeError(
          change,
          `${change.apply.join(" ")}: ${r.stderr || `exit ${r.code}`}`,
        );
      }
    } else if (change.kind === "registry") {
      try {
        const reg = this.reg(change);
        if (change.value) reg.set(change.key, change.name, change.value);
        else reg.remove(change.key, change.name);
      } catch (e) {
        throw new HostChangeError(change, e instanceof Error ? e.message : String(e));
      }
    } else {
      try {
        if (before?.type === "symlink") await Deno.remove(change.path);
        await Deno.writeTextFile(change.path, change.content);
      } catch (e) {
        throw new HostChangeError(change, e instanceof Error ? e.message : String(e));
      }
    }
    rec.applied = true;
    await this.write({ t: "applied", seq });
  }

  /** Undoes every change in reverse order, then removes the journal file. */
  async undoAll(): Promise<UndoReport> {
    if (this.dryRun) return { undone: [], failed: [] };
    const report = await this.undoChanges();
    this.file?.close();
    this.file = null;
    if (this.path) await Deno.remove(this.path).catch(() => {});
    return report;
  }

  private async undoChanges(): Promise<UndoReport> {
    const report: UndoReport = { undone: [], failed: [] };
    while (this.changes.length > 0) {
      const { seq, change, before, applied } = this.changes.pop()!;
      const error = await this.undoOne(change, before);
      if (error === null) report.undone.push(change.what);
      else if (applied && !(change.kind === "command" && change.undoMayFail)) {
        report.failed.push({ what: change.what, error });
      }
      if (this.file) await this.write({ t: "undone", seq });
    }
    return report;
  }

  /** The registry API for `change`; throws without one. */
  private reg(change: RegistryChange): RegistryApi {
    if (!this.registry) throw new HostChangeError(change, "no registry access in this journal");
    return this.registry;
  }

  private async undoOne(change: HostChange, before?: FileBefore): Promise<string | null> {
    if (change.kind === "command") {
      const r = await this.runner.run(change.undo);
      return r.code === 0 ? null : `${change.undo.join(" ")}: ${r.stderr || `exit ${r.code}`}`;
    }
    if (change.kind === "registry") {
      try {
        const reg = this.reg(change);
        const was = before?.type === "registry" ? before.value : null;
        if (was) reg.set(change.key, change.name, was);
        else reg.remove(change.key, change.name);
        return null;
      } catch (e) {
        return e instanceof Error ? e.message : String(e);
      }
    }
    try {
      if (!before || before.type === "absent") {
        await Deno.remove(change.path).catch((e) => {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        });
      } else if (before.type === "symlink") {
        await Deno.remove(change.path).catch(() => {});
        await Deno.symlink(before.target, change.path);
      } else if (before.type === "file") {
        await Deno.writeTextFile(change.path, before.content);
        if (before.mode !== null) await Deno.chmod(change.path, before.mode);
      }
      return null;
    } catch (e) {
      return e instanceof Error ? e.message : String(e);
    }
  }

  private async write(e: Entry): Promise<void> {
    if (!this.file) return;
    const line = enc.encode(JSON.stringify(e) + "\n");
    for (let off = 0; off < line.length;) off += await this.file.write(line.subarray(off));
    await this.file.syncData();
  }
}

/** The line `--dry-run` prints for a change. */
export function describe(change: HostChange): string {
  if (change.kind === "command") return `${change.what}: ${change.apply.join(" ")}`;
  if (change.kind === "registry") {
    const v = change.value;
    return `${change.what}: ${change.key}\\${change.name} = ${
      v ? `${v.type === "sz" ? "REG_SZ" : "REG_DWORD"} ${JSON.stringify(v.data)}` : "(removed)"
    }`;
  }
  return `${change.what}: write ${change.path}`;
}

/** Parses a journal's lines; a torn or foreign line is skipped. */
function parseJournal(text: string): Entry[] {
  const out: Entry[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const e = JSON.parse(line) as Entry;
      if (e && typeof e === "object" && validEntry(e)) out.push(e);
    } catch {
      // A crash mid-write leaves a torn last line: nothing after it was done.
    }
  }
  return out;
}

function validEntry(e: Entry): boolean {
  switch (e.t) {
    case "header":
      return typeof e.pid === "number";
    case "intent": {
      const c = e.change as HostChange | undefined;
      if (!c || typeof e.seq !== "number") return false;
      if (c.kind === "command") return Array.isArray(c.undo) && c.undo.length > 0;
      if (c.kind === "registry") return typeof c.key === "string" && typeof c.name === "string";
      return c.kind === "file" && typeof c.path === "string";
    }
    case "applied":
    case "undone":
      return typeof e.seq === "number";
    default:
      return false;
  }
}

async function readBefore(path: string): Promise<FileBefore> {
  try {
    const info = await Deno.lstat(path);
    if (info.isSymlink) return { type: "symlink", target: await Deno.readLink(path) };
    const bytes = await Deno.readFile(path);
    return {
      type: "file",
      content: dec.decode(bytes),
      mode: info.mode === null ? null : info.mode & 0o7777,
    };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { type: "absent" };
    throw e;
  }
}
