/**
 * A dnsmasq for tests: answers only the records it is given, from one
 * address, optionally inside a network namespace; never reads the host's
 * resolv.conf or /etc/hosts.
 * @module
 */

/** A running dnsmasq; {@link stop} ends it. */
export interface Dnsmasq {
  /** Its UDP port. */
  port: number;
  stop(): Promise<void>;
}

/** A free UDP port on 127.0.0.1 (for a dnsmasq on loopback). */
export function freeUdpPort(): number {
  const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const p = (s.addr as Deno.NetAddr).port;
  s.close();
  return p;
}

/**
 * Starts dnsmasq on `address:port` with `records` (dnsmasq options such as
 * `--host-record=a.test,192.0.2.1` or `--cname=…`), inside `netns` if given.
 */
export function startDnsmasq(
  opts: { address?: string; port?: number; records: string[]; netns?: string },
): Dnsmasq {
  const address = opts.address ?? "127.0.0.1";
  const port = opts.port ?? (opts.netns ? 53 : freeUdpPort());
  const args = [
    "--keep-in-foreground",
    "--no-resolv",
    "--no-hosts",
    "--bind-interfaces",
    `--listen-address=${address}`,
    `--port=${port}`,
    "--user=root",
    "--pid-file=",
    ...opts.records,
  ];
  const [cmd, full] = opts.netns
    ? ["ip", ["netns", "exec", opts.netns, "dnsmasq", ...args]]
    : ["dnsmasq", args];
  const p = new Deno.Command(cmd, { args: full, stdout: "null", stderr: "null" }).spawn();
  return {
    port,
    async stop() {
      try {
        p.kill("SIGTERM");
      } catch {
        // already gone
      }
      await p.status;
    },
  };
}
