/**
 * Network-namespace testbeds (root only): client, server and target hosts in
 * namespaces the test creates and always removes. Client ⇄ server goes through
 * the link emulator (two TUN devices and a userspace forwarder); server ⇄
 * target is a veth pair ({@link Testbed.createVeth}: client ⇄ server a plain
 * veth pair too, for benches). Traffic never leaves these namespaces.
 * @module
 */

import { CLEAN, type Impairment } from "./linkemu.ts";
import { Daemon, TEST_EGRESS_ALLOW, withControlSocket } from "./daemons.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** True when this process may create namespaces and TUN devices. */
export async function canUseNetns(): Promise<boolean> {
  if (Deno.build.os !== "linux") return false;
  try {
    if (Deno.uid() !== 0) return false;
    const r = await new Deno.Command("ip", {
      args: ["netns", "list"],
      stdout: "null",
      stderr: "null",
    }).output();
    return r.success;
  } catch {
    return false;
  }
}

/** Runs a command; throws with its stderr when it fails. */
export async function run(cmd: string, ...args: string[]): Promise<string> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr).trim()}`);
  }
  return new TextDecoder().decode(r.stdout);
}

/** Addresses inside every testbed. */
export const ADDR = {
  client: "10.201.0.1",
  server: "10.201.0.2",
  serverLan: "10.202.0.1",
  target: "10.202.0.2",
} as const;

/**
 * The server ⇄ target subnet: where the testbeds' origins listen. Servers spawned with
 * {@link Testbed.spawnDeno} allow it (and loopback) past the egress policy; the server's own
 * address there stays refused.
 */
export const TARGET_SUBNET = "10.202.0.0/24";

/**
 * IPv6 addresses of the server ⇄ target link (a documentation prefix, which the built-in
 * egress policy refuses: servers spawned with {@link Testbed.spawnDeno} allow
 * {@link TARGET_SUBNET6} too). The client ⇄ server link stays IPv4-only.
 */
export const ADDR6 = {
  serverLan: "2001:db8:202::1",
  target: "2001:db8:202::2",
} as const;

/** The server ⇄ target IPv6 subnet. */
export const TARGET_SUBNET6 = "2001:db8:202::/64";

/**
 * Spawns `cmd args…` inside namespace `ns` (any namespace, also one a test
 * made itself), output captured; `control` is the daemon's control socket.
 */
export function spawnIn(
  name: string,
  ns: string,
  cmd: string,
  args: string[],
  control?: { path: string | null; dir: string | null },
): Daemon {
  const proc = new Deno.Command("ip", {
    args: ["netns", "exec", ns, cmd, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  return new Daemon(name, proc, control);
}

/** Runs `cmd args…` inside namespace `ns` to completion, output captured. */
export async function execIn(ns: string, cmd: string, args: string[]): Promise<Deno.CommandOutput> {
  return await new Deno.Command("ip", {
    args: ["netns", "exec", ns, cmd, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
}

/**
 * Spawns a Deno entry of the project inside namespace `ns`; a daemon gets
 * its own control socket in a temporary directory (reachable from outside
 * the namespace: Unix socket paths are not per network namespace), and a
 * server the egress allows `egressAllow` (see {@link withControlSocket}).
 */
export function spawnDenoIn(
  name: string,
  ns: string,
  entry: string,
  args: string[],
  egressAllow: readonly string[] = TEST_EGRESS_ALLOW,
): Daemon {
  const c = withControlSocket(name, entry, args, egressAllow);
  return spawnIn(name, ns, Deno.execPath(), [
    "run",
    "-A",
    "--unstable-net",
    ROOT + entry,
    ...c.args,
  ], { path: c.controlPath, dir: c.controlDir });
}

/** Three namespaces and an emulated link between client and server. */
export class Testbed {
  readonly client: string;
  readonly server: string;
  readonly target: string;
  private emulator: Daemon | null = null;
  /** The client namespace's side of the client ⇄ server link (its "physical" interface). */
  readonly tunC: string;
  private readonly tunS: string;
  /** Emulator counters after {@link close}. */
  counters: unknown = null;

  private constructor(readonly id: string) {
    this.client = `ostpc-${id}`;
    this.server = `ostps-${id}`;
    this.target = `ostpt-${id}`;
    this.tunC = `oc${id}`;
    this.tunS = `os${id}`;
  }

  /** Builds the testbed; `up` is client → server, `down` server → client. */
  static async create(
    up: Partial<Impairment> = {},
    down: Partial<Impairment> = up,
    seed = 1,
  ): Promise<Testbed> {
    return await Testbed.build((tb) => tb.setup({ ...CLEAN, ...up }, { ...CLEAN, ...down }, seed));
  }

  /**
   * A testbed with fresh, uniquely named namespaces (loopback up), its
   * client ⇄ server link made by `link`; everything is removed if that fails.
   */
  private static async build(link: (tb: Testbed) => Promise<void>): Promise<Testbed> {
    const id = Array.from(
      crypto.getRandomValues(new Uint8Array(3)),
      (b) => b.toString(16).padStart(2, "0"),
    )
      .join("");
    const tb = new Testbed(id);
    try {
      for (const ns of [tb.client, tb.server, tb.target]) {
        await run("ip", "netns", "add", ns);
        await run("ip", "-n", ns, "link", "set", "lo", "up");
      }
      await link(tb);
    } catch (e) {
      await tb.close();
      throw e;
    }
    return tb;
  }

  /**
   * Builds a testbed whose client ⇄ server link is a plain veth pair (no
   * emulator, no impairment): same namespaces, names and addresses as
   * {@link create}, for figures the emulator's own ceiling would hide.
   */
  static createVeth(): Promise<Testbed> {
    return Testbed.build(async (tb) => {
      await run(
        "ip",
        "link",
        "add",
        tb.tunC,
        "netns",
        tb.client,
        "type",
        "veth",
        "peer",
        "name",
        tb.tunS,
        "netns",
        tb.server,
      );
      await run(
        "ip",
        "-n",
        tb.client,
        "addr",
        "add",
        ADDR.client,
        "peer",
        ADDR.server,
        "dev",
        tb.tunC,
      );
      await run(
        "ip",
        "-n",
        tb.server,
        "addr",
        "add",
        ADDR.server,
        "peer",
        ADDR.client,
        "dev",
        tb.tunS,
      );
      await run("ip", "-n", tb.client, "link", "set", tb.tunC, "up");
      await run("ip", "-n", tb.server, "link", "set", tb.tunS, "up");
      await tb.linkTarget();
    });
  }

  private async setup(up: Impairment, down: Impairment, seed: number): Promise<void> {
    const proc = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        ROOT + "tests/support/linkemu_main.ts",
        this.tunC,
        this.tunS,
        JSON.stringify(up),
        JSON.stringify(down),
        String(seed),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.emulator = new Daemon("linkemu", proc);
    await this.emulator.waitFor(/^ready$/);
    await run("ip", "link", "set", this.tunC, "netns", this.client);
    await run("ip", "link", "set", this.tunS, "netns", this.server);
    await run(
      "ip",
      "-n",
      this.client,
      "addr",
      "add",
      ADDR.client,
      "peer",
      ADDR.server,
      "dev",
      this.tunC,
    );
    await run(
      "ip",
      "-n",
      this.server,
      "addr",
      "add",
      ADDR.server,
      "peer",
      ADDR.client,
      "dev",
      this.tunS,
    );
    // A deep device queue: the emulator reads one packet per call, so bursts
    // wait here instead of being dropped before the emulator sees them (the
    // emulator's own queue limit is the one the profiles set).
    await run("ip", "-n", this.client, "link", "set", this.tunC, "txqueuelen", "10000", "up");
    await run("ip", "-n", this.server, "link", "set", this.tunS, "txqueuelen", "10000", "up");
    await this.linkTarget();
  }

  /** The server ⇄ target veth pair. */
  private async linkTarget(): Promise<void> {
    const vs = `vs${this.id}`;
    const vt = `vt${this.id}`;
    await run(
      "ip",
      "link",
      "add",
      vs,
      "netns",
      this.server,
      "type",
      "veth",
      "peer",
      "name",
      vt,
      "netns",
      this.target,
    );
    await run("ip", "-n", this.server, "addr", "add", `${ADDR.serverLan}/24`, "dev", vs);
    await run("ip", "-n", this.target, "addr", "add", `${ADDR.target}/24`, "dev", vt);
    // IPv6 too, usable at once (no duplicate address detection: the link is ours).
    for (
      const [ns, dev, a] of [[this.server, vs, ADDR6.serverLan], [this.target, vt, ADDR6.target]]
    ) {
      await run("ip", "-n", ns, "addr", "add", `${a}/64`, "dev", dev, "nodad");
    }
    await run("ip", "-n", this.server, "link", "set", vs, "up");
    await run("ip", "-n", this.target, "link", "set", vt, "up");
  }

  /** Spawns `cmd args…` inside namespace `ns`; `control` is the daemon's control socket. */
  spawn(
    name: string,
    ns: string,
    cmd: string,
    args: string[],
    control?: { path: string | null; dir: string | null },
  ): Daemon {
    return spawnIn(name, ns, cmd, args, control);
  }

  /**
   * Spawns a Deno script of the project inside namespace `ns`; a daemon gets
   * its own control socket in a temporary directory (reachable from outside
   * the namespace: Unix socket paths are not per network namespace), and a
   * server the egress allows for loopback, {@link TARGET_SUBNET} and
   * {@link TARGET_SUBNET6} (see {@link withControlSocket}).
   */
  spawnDeno(name: string, ns: string, entry: string, args: string[]): Daemon {
    return spawnDenoIn(name, ns, entry, args, [
      ...TEST_EGRESS_ALLOW,
      TARGET_SUBNET,
      TARGET_SUBNET6,
    ]);
  }

  /** Runs a command inside `ns` to completion. */
  exec(ns: string, cmd: string, args: string[]): Promise<Deno.CommandOutput> {
    return execIn(ns, cmd, args);
  }

  /** Stops the emulator and removes every namespace (idempotent). */
  async close(): Promise<void> {
    if (this.emulator) {
      const em = this.emulator;
      this.emulator = null;
      await em.stop();
      const line = em.output.find((l) => l.startsWith("{"));
      if (line) this.counters = JSON.parse(line);
    }
    for (const ns of [this.client, this.server, this.target]) {
      await run("ip", "netns", "del", ns).catch(() => {});
    }
  }
}
