/**
 * A NAT testbed (root only): a client behind a NAT router, a TURN/STUN
 * server (coturn, Debian's package) and an ostp server on the router's
 * "internet" side, each in a namespace this module makes and removes.
 *
 * ```
 * client 192.168.77.2 ── .1 nat 10.77.1.1 ── 10.77.1.2 (+ .3) turn (coturn)
 *                            10.77.2.1 ── 10.77.2.2 server (ostp server, origin on loopback)
 * ```
 * The router masquerades what leaves the LAN (nftables; `random` for a
 * symmetric NAT) and forwards between turn and server untouched;
 * {@link NatBed.blockDirectUdp} drops UDP from the LAN to the server.
 * @module
 */

import { execIn, run, spawnDenoIn, spawnIn } from "./netns.ts";
import type { Daemon } from "./daemons.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

/** The testbed's addresses. */
export const NAT_ADDR = {
  client: "192.168.77.2",
  natLan: "192.168.77.1",
  natPublic: "10.77.1.1",
  turn: "10.77.1.2",
  turnAlt: "10.77.1.3",
  server: "10.77.2.2",
} as const;

/** The coturn account the tests use. */
export const TURN_USER = { username: "ostp", password: "relay-secret-1", realm: "ostp.test" };

/** The four namespaces and their links. */
export class NatBed {
  readonly client: string;
  readonly nat: string;
  readonly turn: string;
  readonly server: string;
  private coturn: Daemon | null = null;
  private coturnArgs: Parameters<NatBed["startCoturn"]> | null = null;

  private constructor(readonly id: string) {
    this.client = `ostpnc-${id}`;
    this.nat = `ostpnn-${id}`;
    this.turn = `ostpnt-${id}`;
    this.server = `ostpns-${id}`;
  }

  /** Builds it; `symmetric` makes the NAT pick a random public port per flow. */
  static async create(opts: { symmetric?: boolean } = {}): Promise<NatBed> {
    const id = Array.from(
      crypto.getRandomValues(new Uint8Array(3)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    const b = new NatBed(id);
    try {
      for (const ns of [b.client, b.nat, b.turn, b.server]) {
        await run("ip", "netns", "add", ns);
        await run("ip", "-n", ns, "link", "set", "lo", "up");
      }
      await b.link(
        b.client,
        `nc${id}`,
        `${NAT_ADDR.client}/24`,
        b.nat,
        `nl${id}`,
        `${NAT_ADDR.natLan}/24`,
      );
      await b.link(
        b.turn,
        `nt${id}`,
        `${NAT_ADDR.turn}/24`,
        b.nat,
        `np${id}`,
        `${NAT_ADDR.natPublic}/24`,
      );
      await run("ip", "-n", b.turn, "addr", "add", `${NAT_ADDR.turnAlt}/24`, "dev", `nt${id}`);
      await b.link(b.server, `ns${id}`, `${NAT_ADDR.server}/24`, b.nat, `nq${id}`, "10.77.2.1/24");
      await run("ip", "-n", b.client, "route", "add", "default", "via", NAT_ADDR.natLan);
      await run("ip", "-n", b.turn, "route", "add", "default", "via", NAT_ADDR.natPublic);
      await run("ip", "-n", b.server, "route", "add", "default", "via", "10.77.2.1");
      await run("ip", "netns", "exec", b.nat, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
      await b.nft(
        "add table ip nat; " +
          "add chain ip nat post { type nat hook postrouting priority 100; }; " +
          `add rule ip nat post ip saddr 192.168.77.0/24 oifname != "nl${id}" masquerade` +
          (opts.symmetric ? " random" : "") + "; " +
          "add table ip fw; add chain ip fw filter_fwd { type filter hook forward priority 0; }",
      );
    } catch (e) {
      await b.close();
      throw e;
    }
    return b;
  }

  /** A veth pair between two namespaces, addressed and up. */
  private async link(
    nsA: string,
    devA: string,
    addrA: string,
    nsB: string,
    devB: string,
    addrB: string,
  ): Promise<void> {
    await run(
      "ip",
      "link",
      "add",
      devA,
      "netns",
      nsA,
      "type",
      "veth",
      "peer",
      "name",
      devB,
      "netns",
      nsB,
    );
    await run("ip", "-n", nsA, "addr", "add", addrA, "dev", devA);
    await run("ip", "-n", nsB, "addr", "add", addrB, "dev", devB);
    await run("ip", "-n", nsA, "link", "set", devA, "up");
    await run("ip", "-n", nsB, "link", "set", devB, "up");
  }

  /** nft in the router's namespace. */
  nft(script: string): Promise<string> {
    return run("ip", "netns", "exec", this.nat, "nft", script);
  }

  /** Drops UDP from the LAN to the ostp server (direct UDP blocked; TURN still reaches it). */
  blockDirectUdp(): Promise<string> {
    return this.nft(
      `add rule ip fw filter_fwd ip saddr 192.168.77.0/24 ip daddr ${NAT_ADDR.server} meta l4proto udp drop`,
    );
  }

  /** Drops every UDP datagram from the LAN: only TCP leaves (TURN over TCP/TLS still works). */
  blockAllUdp(): Promise<string> {
    return this.nft("add rule ip fw filter_fwd ip saddr 192.168.77.0/24 meta l4proto udp drop");
  }

  /** Forgets every NAT mapping (conntrack), as a router that rebooted or timed flows out. */
  flushNat(): Promise<string> {
    return run("ip", "netns", "exec", this.nat, "conntrack", "-F").catch(() => "");
  }

  /**
   * Starts coturn in the turn namespace on both addresses (RFC 5780 needs
   * two), long-term credentials, its relay addresses in its own namespace;
   * `extra` adds options (`--max-allocate-lifetime=20`).
   */
  async startCoturn(
    extra: string[] = [],
    tls?: { cert: string; key: string },
  ): Promise<Daemon> {
    this.coturnArgs = [extra, tls];
    const d = spawnIn("coturn", this.turn, "turnserver", [
      "-n",
      "--listening-ip",
      NAT_ADDR.turn,
      "--listening-ip",
      NAT_ADDR.turnAlt,
      "--listening-port",
      "3478",
      "--alt-listening-port",
      "3479",
      "--relay-ip",
      NAT_ADDR.turn,
      "--min-port",
      "49152",
      "--max-port",
      "49252",
      "--lt-cred-mech",
      "--user",
      `${TURN_USER.username}:${TURN_USER.password}`,
      "--realm",
      TURN_USER.realm,
      "--fingerprint",
      ...(tls
        ? ["--tls-listening-port", "5349", "--cert", tls.cert, "--pkey", tls.key]
        : ["--no-tls"]),
      "--no-dtls",
      "--no-cli",
      "--log-file",
      "stdout",
      "--simple-log",
      "--verbose",
      "--userdb",
      `/tmp/ostp-coturn-${this.id}.db`,
      ...extra,
    ]);
    this.coturn = d;
    await d.waitFor(/IO method|Total General servers|listener opened/i, 10_000);
    // coturn opens its sockets after that line: give it a moment, then check it answers.
    await new Promise((r) => setTimeout(r, 300));
    return d;
  }

  /** Stops coturn and starts it again with the same options (its allocations are lost). */
  async restartCoturn(): Promise<Daemon> {
    const args = this.coturnArgs;
    if (!args) throw new Error("coturn was not started");
    await this.coturn?.stop();
    this.coturn = null;
    return await this.startCoturn(...args);
  }

  /** The running coturn, if started. */
  get coturnDaemon(): Daemon | null {
    return this.coturn;
  }

  /** Runs a command in `ns`. */
  exec(ns: string, cmd: string, args: string[]): Promise<Deno.CommandOutput> {
    return execIn(ns, cmd, args);
  }

  /** Stops coturn and removes every namespace (idempotent). */
  async close(): Promise<void> {
    await this.coturn?.stop().catch(() => {});
    this.coturn = null;
    for (const ns of [this.client, this.nat, this.turn, this.server]) {
      await run("ip", "netns", "del", ns).catch(() => {});
    }
    await Deno.remove(`/tmp/ostp-coturn-${this.id}.db`).catch(() => {});
  }
}

/** The daemons of {@link startNatTunnel}. */
export interface NatDaemons {
  origin: Daemon;
  server: Daemon;
  client: Daemon;
}

/**
 * Origin and ostp server (with `serverArgs` added) in the server namespace,
 * the client (with `config`) behind the NAT.
 */
export async function startNatTunnel(
  bed: NatBed,
  dir: string,
  daemons: Daemon[],
  config: Record<string, unknown>,
  clientArgs: string[] = [],
  waitConnected = true,
  serverArgs: string[] = [],
): Promise<NatDaemons> {
  const key = formatAccessKey(generateAccessKey(), "hex");
  const origin = spawnDenoIn("origin", bed.server, "tests/support/origin_main.ts", [
    "127.0.0.1",
    "8080",
  ]);
  daemons.push(origin);
  const server = spawnDenoIn("server", bed.server, "server/main.ts", [
    "-k",
    key,
    "-l",
    `${NAT_ADDR.server}:8443`,
    ...serverArgs,
  ]);
  daemons.push(server);
  await origin.waitFor(/ready/);
  await server.waitFor(/share link: /);
  const cfgPath = `${dir}/client.json`;
  await Deno.writeTextFile(
    cfgPath,
    JSON.stringify({
      server: `${NAT_ADDR.server}:8443`,
      key,
      listen: "127.0.0.1:1088",
      ...config,
    }),
  );
  const client = spawnDenoIn("client", bed.client, "client/main.ts", [
    "-c",
    cfgPath,
    ...clientArgs,
  ]);
  daemons.push(client);
  if (waitConnected) await client.waitFor(/connected to/, 30_000);
  return { origin, server, client };
}
