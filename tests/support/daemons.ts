/**
 * Test support: real `ostp-server` and `ostp-client` processes, a local HTTP
 * origin with deterministic payloads, and curl. Every daemon spawned here gets
 * its own control socket in a fresh temporary directory (removed when the
 * process exits), so parallel tests never share one.
 * @module
 */

import { queryControl } from "../../shared/control/query.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
/**
 * The permissions `deno task server` / `deno task client` grant (deno.json tasks "server",
 * "client" and "compile"): no `--allow-all`.
 */
export const PERMS: readonly string[] = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys",
  "--allow-ffi",
];

/** Picks a free port on 127.0.0.1 for `transport`. */
export function freePort(transport: "tcp" | "udp" = "tcp"): number {
  if (transport === "udp") {
    const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const p = (s.addr as Deno.NetAddr).port;
    s.close();
    return p;
  }
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
}

const DAEMON_ENTRIES = ["server/main.ts", "client/main.ts"];
const SUBCOMMANDS = ["init", "check", "genkey", "links", "status"];

/**
 * The egress allows every test server gets unless the test picks its policy: the e2e tests'
 * origins live on loopback, which the built-in policy refuses (docs/egress.md). The netns test
 * beds add their target subnet (tests/support/netns.ts).
 */
export const TEST_EGRESS_ALLOW: readonly string[] = ["127.0.0.0/8", "::1/128"];

/**
 * Marker argument for a test server that runs with the built-in egress policy and no test
 * allows; {@link withControlSocket} removes it before spawning.
 */
export const EGRESS_DEFAULT = "--egress-default";

/**
 * Worker threads of every test server that does not pick its own (`--workers`):
 * `OSTP_TEST_SERVER_WORKERS`, default 1 (the in-process path; `deno task test`
 * runs the e2e suite again with 2).
 */
export function testServerWorkers(): number {
  const v = Number(Deno.env.get("OSTP_TEST_SERVER_WORKERS") ?? "1");
  return Number.isInteger(v) && v >= 1 ? v : 1;
}

/** Arguments plus the control socket a spawned daemon should use (null: none added). */
export interface ControlledArgs {
  args: string[];
  /** The socket path passed with `--control`, or null. */
  controlPath: string | null;
  /** The temporary directory holding it, to remove when the daemon exits. */
  controlDir: string | null;
}

/**
 * Adds `--control <fresh temp dir>/<name>.sock` to a daemon's arguments
 * (`entry` is `server/main.ts` or `client/main.ts`, not running a subcommand);
 * a `--control <path>` already there is used as is, `--no-control` respected,
 * and other commands are left alone. A server also gets `--print-links`: its
 * stdout is a pipe here, and tests read the share link from it.
 *
 * A server also gets `--egress-allow <entry>` for each of `egressAllow`
 * (default {@link TEST_EGRESS_ALLOW}: loopback, where the tests' origins
 * listen) — unless its arguments already hold a `--egress-…` flag (the test
 * chose its policy) or the {@link EGRESS_DEFAULT} marker, which is removed and
 * leaves the built-in policy alone. A config file's `egress` is not looked at:
 * a test whose config sets one passes a flag or the marker too. A server also
 * gets `--workers` {@link testServerWorkers} unless its arguments name a count.
 */
export function withControlSocket(
  name: string,
  entry: string,
  args: string[],
  egressAllow: readonly string[] = TEST_EGRESS_ALLOW,
): ControlledArgs {
  if (!DAEMON_ENTRIES.includes(entry) || SUBCOMMANDS.includes(args[0])) {
    return { args, controlPath: null, controlDir: null };
  }
  if (entry === "server/main.ts") {
    if (args.includes(EGRESS_DEFAULT)) args = args.filter((a) => a !== EGRESS_DEFAULT);
    else if (!args.some((a) => a.startsWith("--egress-"))) {
      args = [...args, ...egressAllow.flatMap((e) => ["--egress-allow", e])];
    }
    if (!args.includes("--print-links")) args = [...args, "--print-links"];
    if (!args.some((a) => a === "--workers" || a.startsWith("--workers="))) {
      args = [...args, "--workers", String(testServerWorkers())];
    }
  }
  const given = args.indexOf("--control");
  if (given >= 0) return { args, controlPath: args[given + 1] ?? null, controlDir: null };
  if (args.some((a) => a === "--no-control" || a.startsWith("--control="))) {
    return { args, controlPath: null, controlDir: null };
  }
  const controlDir = Deno.makeTempDirSync({ prefix: "ostp-ctl-" });
  const controlPath = `${controlDir}/${name.replace(/[^A-Za-z0-9_-]/g, "_")}.sock`;
  return { args: [...args, "--control", controlPath], controlPath, controlDir };
}

/** A daemon child process with its collected output. */
export class Daemon {
  readonly output: string[] = [];
  private readonly lineWaiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  readonly status: Promise<Deno.CommandStatus>;
  private readonly pumps: Promise<void>[];
  /** The daemon's control socket (`--control`), if the spawn helper gave it one. */
  readonly controlPath: string | null;

  constructor(
    readonly name: string,
    private readonly proc: Deno.ChildProcess,
    control: { path: string | null; dir: string | null } = { path: null, dir: null },
  ) {
    this.pumps = [this.pump(proc.stdout), this.pump(proc.stderr)];
    this.controlPath = control.path;
    const dir = control.dir;
    // The temporary directory goes when the process does, however it ends.
    this.status = proc.status.finally(() => {
      try {
        if (dir) Deno.removeSync(dir, { recursive: true });
      } catch {
        // already gone
      }
    });
  }

  private async pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      let i;
      while ((i = rest.indexOf("\n")) >= 0) {
        const line = rest.slice(0, i);
        rest = rest.slice(i + 1);
        this.output.push(line);
        if (Deno.env.get("OSTP_TEST_VERBOSE")) console.error(`[${this.name}] ${line}`);
        for (let k = this.lineWaiters.length - 1; k >= 0; k--) {
          const m = line.match(this.lineWaiters[k].re);
          if (m) this.lineWaiters.splice(k, 1)[0].resolve(m);
        }
      }
    }
  }

  /** Sends a signal without waiting. */
  signal(sig: Deno.Signal): void {
    this.proc.kill(sig);
  }

  /** Output lines matching `re` so far. */
  count(re: RegExp): number {
    return this.output.filter((l) => re.test(l)).length;
  }

  /** Sends one request on the daemon's control socket; throws unless it answers `ok`. */
  async control(request: Record<string, unknown>): Promise<Record<string, any>> {
    if (!this.controlPath) throw new Error(`${this.name}: spawned without a control socket`);
    const answer = await queryControl(this.controlPath, request, { timeoutMs: 10_000 });
    if (answer.ok !== true) {
      throw new Error(`${this.name}: ${JSON.stringify(request)} failed: ${answer.error}`);
    }
    return answer;
  }

  /** The counters (`status` on the control socket): `stats`; the server adds `rssBytes`, `users`. */
  statsDump(): Promise<Record<string, any>> {
    return this.control({ cmd: "status" });
  }

  /**
   * Waits for an output line matching `re`, among lines from index `from` on
   * (default 0: also lines already printed).
   */
  waitFor(re: RegExp, timeoutMs = 20_000, from = 0): Promise<RegExpMatchArray> {
    for (let i = from; i < this.output.length; i++) {
      const m = this.output[i].match(re);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new Error(
            `${this.name}: no line matching ${re} in ${timeoutMs} ms:\n${this.output.join("\n")}`,
          ),
        );
      }, timeoutMs);
      this.lineWaiters.push({
        re,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
    });
  }

  /** Process id. */
  get pid(): number {
    return this.proc.pid;
  }

  /** CPU seconds (user + system) the process used so far (Linux /proc). */
  cpuSeconds(): number {
    const stat = Deno.readTextFileSync(`/proc/${this.proc.pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ=100)
  }

  /** True while the process runs. */
  async alive(): Promise<boolean> {
    const r = await Promise.race([
      this.status.then(() => false),
      new Promise((r) => setTimeout(() => r(true), 50)),
    ]);
    return r as boolean;
  }

  /** Sends `signal` and waits for exit. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      this.proc.kill(signal);
    } catch {
      // already gone
    }
    const st = await this.status;
    await Promise.all(this.pumps);
    return st;
  }
}

/**
 * Spawns `deno run` on an entry point, with `env` added to its environment; a daemon gets its
 * own control socket ({@link withControlSocket}).
 */
export function spawnDeno(
  name: string,
  entry: string,
  args: string[],
  env: Record<string, string> = {},
): Daemon {
  const c = withControlSocket(name, entry, args);
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-net", ...PERMS, ROOT + entry, ...c.args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  return new Daemon(name, proc, { path: c.controlPath, dir: c.controlDir });
}

/** A running server and its share link. */
export interface ServerHandle {
  daemon: Daemon;
  port: number;
  link: string;
}

/** Starts `server/main.ts` on 127.0.0.1 with a fresh key. */
export async function startServer(extra: string[] = []): Promise<ServerHandle> {
  const port = freePort("udp");
  const key = Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const daemon = spawnDeno("server", "server/main.ts", [
    "--listen",
    `127.0.0.1:${port}`,
    "--key",
    key,
    ...extra,
  ]);
  const m = await daemon.waitFor(/share link: (ostp:\/\/\S+)/);
  return { daemon, port, link: m[1] };
}

/** A running client and its proxy port. */
export interface ClientHandle {
  daemon: Daemon;
  proxyPort: number;
}

/** Starts `client/main.ts` with a share link; resolves once the proxy listens. */
export async function startClient(link: string, extra: string[] = []): Promise<ClientHandle> {
  const proxyPort = freePort("tcp");
  const daemon = spawnDeno("client", "client/main.ts", [
    link,
    "--listen",
    `127.0.0.1:${proxyPort}`,
    ...extra,
  ]);
  await daemon.waitFor(/listening on/);
  await daemon.waitFor(/connected to/);
  return { daemon, proxyPort };
}

/** Deterministic pseudo-random bytes (xorshift32), fast enough for tens of MiB. */
export function payload(len: number, seed = 1): Uint8Array {
  const out = new Uint8Array(len);
  const words = new Uint32Array(out.buffer, 0, len >>> 2);
  let x = seed | 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  for (let i = words.length * 4; i < len; i++) out[i] = i & 0xff;
  return out;
}

/** SHA-256 as lowercase hex. */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * A local HTTP origin: `/bytes/<n>?seed=s` returns n deterministic bytes,
 * `/upload` returns the SHA-256 of the request body, `/hello` a short text.
 */
export function startOrigin(hostname = "127.0.0.1", port = 0): {
  port: number;
  close: () => Promise<void>;
  cache: Map<string, Uint8Array>;
} {
  const cache = new Map<string, Uint8Array>();
  const server = Deno.serve({ hostname, port, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const m = url.pathname.match(/^\/bytes\/(\d+)$/);
    if (m) {
      const key = `${m[1]}:${url.searchParams.get("seed") ?? "1"}`;
      let body = cache.get(key);
      if (!body) {
        cache.set(key, body = payload(Number(m[1]), Number(url.searchParams.get("seed") ?? 1)));
      }
      return new Response(body as Uint8Array<ArrayBuffer>);
    }
    if (url.pathname === "/upload") {
      const body = new Uint8Array(await req.arrayBuffer());
      return new Response(`${body.length} ${await sha256Hex(body)}`);
    }
    if (url.pathname === "/hello") return new Response("hello\n");
    return new Response("not found", { status: 404 });
  });
  return { port: server.addr.port, close: () => server.shutdown(), cache };
}

/** Runs curl; returns exit code, stdout and stderr. */
export async function curl(
  args: string[],
): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: out.stdout, stderr: new TextDecoder().decode(out.stderr) };
}
