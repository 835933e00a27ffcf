/**
 * The main thread's side of a multi-worker server (docs/workers.md): starts
 * the worker threads (worker 0 binds first, the others join its ports with
 * `SO_REUSEPORT`), joins every two of them with a `MessageChannel`, answers
 * their hello reservations from the one {@link ReservationTable}, keeps the
 * registry of live sessions and their owners (broadcast to every worker as
 * routes), gathers counters and snapshots, and replaces a worker that dies.
 * @module
 */

import type { HostPort, ServerConfig } from "../shared/config/types.ts";
import { getLog } from "../shared/log.ts";
import { CloseCode } from "../shared/session/session.ts";
import { libc } from "../ffi/libc.ts";
import { ReservationTable } from "./reservations.ts";
import type {
  CounterRow,
  FromWorker,
  PolicyInputs,
  ToWorker,
  WorkerSessionView,
  WorkerStats,
} from "./worker_protocol.ts";

const log = getLog("server");

/** A live session as the main thread knows it. */
export interface PoolSession {
  /** Session id. */
  readonly sid: number;
  /** The worker that owns it. */
  readonly worker: number;
  /** Its access key, hex. */
  readonly keyHex: string;
  /** Client address (host:port) at the handshake, then as the last snapshot saw it. */
  address: string;
  /** When it was accepted, ms since the epoch. */
  createdAt: number;
  /** True once the worker said it was accepted. */
  opened: boolean;
  /** A close was asked for (kick, limit, key removed). */
  closing: boolean;
  /** The last snapshot's view of it. */
  view: WorkerSessionView | null;
}

/** What the pool asks of the server. */
export interface PoolHooks {
  /** Admission of a reserved session: a reason refuses it (closed after the handshake). */
  admit(sid: number, keyHex: string, address: string): string | null;
  /** A session was accepted by its worker. */
  opened(s: PoolSession): void;
  /** A session ended (also when its worker died). */
  closed(s: PoolSession, reason: string): void;
  /** Per-key traffic from a worker. */
  counters(rows: readonly CounterRow[]): void;
}

/** Settings of a {@link WorkerPool}. */
export interface WorkerPoolOptions {
  /** Worker threads, ≥ 2. */
  count: number;
  /** The configuration in force (call {@link WorkerPool.setConfig} on reload). */
  config: ServerConfig;
  /** The access keys in force now. */
  keys: () => Uint8Array[];
  /** The egress policy inputs in force now. */
  policy: () => PolicyInputs;
  /** The server's callbacks. */
  hooks: PoolHooks;
  /** The worker module (default `worker_main.ts` beside this one). */
  workerUrl?: string;
}

/** One worker thread and what the pool knows of it. */
interface Slot {
  index: number;
  worker: Worker;
  /** False once it died or was stopped. */
  alive: boolean;
  /** It closed its sockets (after a `stop`). */
  stopped: boolean;
  stats: WorkerStats | null;
  /** Its sockets' descriptors (closed here if it dies: a terminated worker leaves them open). */
  fds: readonly number[];
  /** Resolves the wait for its `ready`/`failed`. */
  onReady: ((r: { ok: true } | { ok: false; error: string; addrInUse: boolean }) => void) | null;
  onStopped: (() => void) | null;
}

/** Worker threads running the sessions of one server. */
export class WorkerPool {
  /** Live sessions (and reservations about to become sessions) by id. */
  readonly sessions: Map<number, PoolSession> = new Map();
  readonly #table: ReservationTable;
  readonly #slots: Slot[] = [];
  readonly #opts: WorkerPoolOptions;
  #config: ServerConfig;
  /** The bound addresses (ports resolved), once started. */
  #bound: Deno.NetAddr[] = [];
  #snapshotId = 1;
  readonly #snapshotWaits = new Map<number, { left: Set<number>; done: () => void }>();
  readonly #closeWaits = new Map<number, (() => void)[]>();
  #stopping = false;

  /** A pool of `opts.count` workers, not started. */
  constructor(opts: WorkerPoolOptions) {
    this.#opts = opts;
    this.#config = opts.config;
    this.#table = new ReservationTable({
      maxSessions: opts.config.maxSessions,
      replayCacheSize: opts.config.replayCacheSize,
      replayWindowMs: opts.config.replayWindow * 1000,
    });
  }

  /** Number of workers. */
  get count(): number {
    return this.#opts.count;
  }

  /** The addresses bound (the shared ports). */
  get addresses(): Deno.NetAddr[] {
    return this.#bound;
  }

  /**
   * Starts the workers: worker 0 binds every listener (a port 0 gets its
   * port), the others bind the same ports. Throws (with every worker
   * stopped) when one cannot.
   */
  async start(): Promise<void> {
    const first = await this.#spawn(0, this.#config.listen);
    if (!first.ok) {
      this.#terminateAll();
      throw new StartError(first.error, first.addrInUse);
    }
    const listen = this.#bound.map((a, i): HostPort => ({
      host: this.#config.listen[i].host,
      port: a.port,
    }));
    const rest = await Promise.all(
      Array.from({ length: this.count - 1 }, (_, i) => this.#spawn(i + 1, listen)),
    );
    const bad = rest.find((r) => !r.ok);
    if (bad && !bad.ok) {
      this.#terminateAll();
      throw new StartError(bad.error, bad.addrInUse);
    }
    this.#connectAll();
  }

  /** Starts worker `index` listening on `listen`; waits for its answer. */
  #spawn(
    index: number,
    listen: HostPort[],
  ): Promise<{ ok: true } | { ok: false; error: string; addrInUse: boolean }> {
    const url = this.#opts.workerUrl ?? new URL("./worker_main.ts", import.meta.url).href;
    const worker = new Worker(url, { type: "module", name: `ostp-worker-${index}` });
    const slot: Slot = {
      index,
      worker,
      alive: true,
      stopped: false,
      stats: null,
      fds: [],
      onReady: null,
      onStopped: null,
    };
    this.#slots[index] = slot;
    const { promise, resolve } = Promise.withResolvers<
      { ok: true } | { ok: false; error: string; addrInUse: boolean }
    >();
    slot.onReady = resolve;
    worker.onmessage = (e: MessageEvent<FromWorker>) => this.#onMessage(slot, e.data);
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#died(slot, e.message || String(e.error));
    };
    worker.onmessageerror = () =>
      log.warn("worker {index}: a message could not be read", { index });
    const routes: [number, number][] = [];
    for (const [sid, w] of this.#table.entries()) routes.push([sid, w]);
    this.#post(slot, {
      type: "init",
      index,
      config: { ...this.#config, listen },
      keys: this.#opts.keys(),
      policy: this.#opts.policy(),
      routes,
    });
    return promise;
  }

  /** A `MessageChannel` between every two live workers. */
  #connectAll(): void {
    for (let i = 0; i < this.#slots.length; i++) {
      for (let j = i + 1; j < this.#slots.length; j++) {
        this.#connect(this.#slots[i], this.#slots[j]);
      }
    }
  }

  #connect(a: Slot, b: Slot): void {
    if (!a.alive || !b.alive) return;
    const ch = new MessageChannel();
    a.worker.postMessage({ type: "peer", index: b.index, port: ch.port1 } satisfies ToWorker, [
      ch.port1,
    ]);
    b.worker.postMessage({ type: "peer", index: a.index, port: ch.port2 } satisfies ToWorker, [
      ch.port2,
    ]);
  }

  #post(slot: Slot, m: ToWorker): void {
    if (!slot.alive) return;
    try {
      slot.worker.postMessage(m);
    } catch (e) {
      log.debug("worker {index}: post failed: {error}", { index: slot.index, error: String(e) });
    }
  }

  #broadcast(m: ToWorker, except = -1): void {
    for (const s of this.#slots) if (s.index !== except) this.#post(s, m);
  }

  #onMessage(slot: Slot, m: FromWorker): void {
    switch (m.type) {
      case "ready": {
        slot.fds = m.fds;
        if (slot.index === 0 && this.#bound.length === 0) {
          this.#bound = m.addresses.map((a) => ({
            transport: "udp",
            hostname: a.hostname,
            port: a.port,
          }));
        }
        slot.onReady?.({ ok: true });
        slot.onReady = null;
        return;
      }
      case "failed":
        slot.onReady?.({ ok: false, error: m.error, addrInUse: m.addrInUse });
        slot.onReady = null;
        return;
      case "reserve": {
        const r = this.#table.reserve(m.sid, m.ephemeral, slot.index, performance.now());
        if (r !== "ok") {
          this.#post(slot, { type: "reserved", id: m.id, answer: { kind: "drop", counter: r } });
          return;
        }
        const refused = this.#opts.hooks.admit(m.sid, m.keyHex, m.address);
        this.sessions.set(m.sid, {
          sid: m.sid,
          worker: slot.index,
          keyHex: m.keyHex,
          address: m.address,
          createdAt: Date.now(),
          opened: false,
          closing: refused !== null,
          view: null,
        });
        this.#broadcast({ type: "routes", add: [[m.sid, slot.index]], remove: [] }, slot.index);
        this.#post(slot, { type: "reserved", id: m.id, answer: { kind: "ok", refused } });
        return;
      }
      case "released":
        this.#forget(m.sid, null);
        return;
      case "opened": {
        const s = this.sessions.get(m.sid);
        if (!s) return;
        s.opened = true;
        s.address = m.address;
        s.createdAt = m.createdAt;
        this.#opts.hooks.opened(s);
        return;
      }
      case "closed":
        this.#forget(m.sid, m.reason);
        return;
      case "counters":
        this.#opts.hooks.counters(m.rows);
        return;
      case "snapshot": {
        slot.stats = m.stats;
        for (const v of m.stats.sessions) {
          const s = this.sessions.get(v.sid);
          if (s && s.worker === slot.index) {
            s.view = v;
            s.address = v.address;
          }
        }
        const wait = this.#snapshotWaits.get(m.id);
        if (wait) {
          wait.left.delete(slot.index);
          if (wait.left.size === 0) wait.done();
        }
        return;
      }
      case "stopped":
        slot.stopped = true;
        slot.onStopped?.();
        return;
    }
  }

  /** Drops a session from the table and the registry; `reason` null: it never opened. */
  #forget(sid: number, reason: string | null): void {
    this.#table.release(sid);
    const s = this.sessions.get(sid);
    this.sessions.delete(sid);
    this.#broadcast({ type: "routes", add: [], remove: [sid] });
    if (s && s.opened) this.#opts.hooks.closed(s, reason ?? "closed");
    for (const w of this.#closeWaits.get(sid) ?? []) w();
    this.#closeWaits.delete(sid);
  }

  /** A worker died: its sessions are gone; a replacement takes its place on the same ports. */
  #died(slot: Slot, why: string): void {
    if (!slot.alive) return;
    slot.alive = false;
    try {
      slot.worker.terminate();
    } catch {
      // already gone
    }
    closeFds(slot);
    slot.onReady?.({ ok: false, error: `worker failed: ${why}`, addrInUse: false });
    slot.onReady = null;
    slot.onStopped?.();
    if (this.#stopping) return;
    const lost = this.#table.releaseWorker(slot.index);
    log.error("worker {index} failed ({error}); {n} session(s) lost, starting a replacement", {
      index: slot.index,
      error: why,
      n: lost.length,
    });
    for (const sid of lost) {
      const s = this.sessions.get(sid);
      this.sessions.delete(sid);
      if (s?.opened) this.#opts.hooks.closed(s, "worker failed");
      for (const w of this.#closeWaits.get(sid) ?? []) w();
      this.#closeWaits.delete(sid);
    }
    if (lost.length > 0) this.#broadcast({ type: "routes", add: [], remove: lost });
    if (this.#bound.length === 0) return; // still starting: start() reports it
    const listen = this.#bound.map((a, i): HostPort => ({
      host: this.#config.listen[i].host,
      port: a.port,
    }));
    void this.#spawn(slot.index, listen).then((r) => {
      if (!r.ok) {
        log.error("worker {index} could not be replaced: {error}", {
          index: slot.index,
          error: r.error,
        });
        return;
      }
      const fresh = this.#slots[slot.index];
      for (const other of this.#slots) if (other !== fresh) this.#connect(fresh, other);
      log.info("worker {index} replaced", { index: slot.index });
    });
  }

  /** Asks the owner to close session `sid`; false if there is no such session. */
  close(sid: number, code: number, reason: string): boolean {
    const s = this.sessions.get(sid);
    if (!s) return false;
    s.closing = true;
    this.#post(this.#slots[s.worker], { type: "close", sid, code, reason });
    return true;
  }

  /** Resolves once session `sid` is gone (or after `timeoutMs`). */
  closed(sid: number, timeoutMs = 2000): Promise<void> {
    if (!this.sessions.has(sid)) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    const t = setTimeout(resolve, timeoutMs);
    const list = this.#closeWaits.get(sid) ?? [];
    list.push(() => {
      clearTimeout(t);
      resolve();
    });
    this.#closeWaits.set(sid, list);
    return promise;
  }

  /** Puts `keys` in force on every worker; sessions under removed keys close there. */
  updateKeys(keys: Uint8Array[], code: number, reason: string): void {
    this.#broadcast({ type: "keys", keys, code, reason });
  }

  /** A reload's new configuration: limits go to the workers, the cap stays here. */
  setConfig(next: ServerConfig): void {
    this.#config = { ...next, listen: this.#config.listen };
    this.#broadcast({ type: "config", config: this.#config });
    this.#table.maxSessions = next.maxSessions;
    this.#broadcast({
      type: "limits",
      handshakeRate: next.handshakeRate,
      handshakeBurst: next.handshakeBurst,
    });
  }

  /** A new egress policy for every worker. */
  setPolicy(policy: PolicyInputs): void {
    this.#broadcast({ type: "policy", policy });
  }

  /** The latest snapshot of every live worker. */
  stats(): WorkerStats[] {
    const out: WorkerStats[] = [];
    for (const s of this.#slots) if (s.alive && s.stats) out.push(s.stats);
    return out;
  }

  /**
   * Asks every worker for its counters and a snapshot now; resolves when all
   * answered (or after `timeoutMs`).
   */
  refresh(timeoutMs = 1000): Promise<void> {
    const id = this.#snapshotId++;
    const left = new Set(this.#slots.filter((s) => s.alive).map((s) => s.index));
    if (left.size === 0) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    const t = setTimeout(() => {
      this.#snapshotWaits.delete(id);
      resolve();
    }, timeoutMs);
    this.#snapshotWaits.set(id, {
      left,
      done: () => {
        clearTimeout(t);
        this.#snapshotWaits.delete(id);
        resolve();
      },
    });
    for (const i of left) this.#post(this.#slots[i], { type: "snapshot", id });
    return promise;
  }

  /**
   * Stops every worker: each closes its sessions with `reason` (the CLOSE
   * datagrams leave), its sockets, and is terminated.
   */
  async stop(reason = "server shutting down"): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.#slots.map((slot) => {
      if (!slot.alive) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      const t = setTimeout(resolve, 3000);
      slot.onStopped = () => {
        clearTimeout(t);
        resolve();
      };
      this.#post(slot, { type: "stop", code: CloseCode.SHUTDOWN, reason });
      return promise;
    }));
    this.#terminateAll();
  }

  #terminateAll(): void {
    this.#stopping = true;
    for (const s of this.#slots) {
      if (!s.alive) continue;
      s.alive = false;
      try {
        s.worker.terminate();
      } catch {
        // already gone
      }
      closeFds(s);
    }
  }

  /**
   * Test hook: makes worker `index` throw an uncaught error; resolves once
   * the pool noticed (its sessions are forgotten then).
   */
  crashForTest(index: number): Promise<void> {
    const slot = this.#slots[index];
    if (!slot?.alive) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    const prev = slot.worker.onerror;
    slot.worker.onerror = (e) => {
      prev?.call(slot.worker, e);
      resolve();
    };
    this.#post(slot, { type: "fail", reason: "failed on purpose (test)" });
    return promise;
  }
}

/**
 * Closes the sockets of a terminated worker that did not close them itself:
 * they would stay in the port's group, taking their share of the datagrams unread.
 */
function closeFds(slot: Slot): void {
  if (!slot.stopped) {
    for (const fd of slot.fds) {
      try {
        libc().close(fd);
      } catch {
        // no libc: nothing was opened through it either
      }
    }
  }
  slot.fds = [];
}

/** A worker could not start (its listener's error). */
export class StartError extends Error {
  constructor(message: string, readonly addrInUse: boolean) {
    super(message);
    this.name = "StartError";
  }
}
