/**
 * The carriers end to end (docs/carriers.md): real daemons in network
 * namespaces, curl through the client's proxy, a firewall in the server's
 * namespace that drops every UDP datagram and passes only TCP to the server's
 * port (new connections in, `ct state established,related` back).
 * - fake-TCP: 64 MiB byte-exact with UDP blocked; tshark reads the capture as
 *   valid TCP; conntrack shows the flow ESTABLISHED.
 * - fallback: `--carrier auto` starts on UDP; UDP blocked mid-transfer → the
 *   session moves to fake-TCP without a new handshake, the transfer intact.
 * @module
 */
import { assert, assertEquals } from "../support/assert.ts";
import { payload, sha256Hex } from "../support/daemons.ts";
import { ADDR, canUseNetns, run, Testbed } from "../support/netns.ts";
import { startTunnel } from "../support/tunnel_bed.ts";
import { makeTestCerts } from "../support/certs.ts";

const MiB = 1024 * 1024;
const enabled = await canUseNetns();
if (!enabled) console.log("SKIPPED netns carrier tests: need root and ip netns");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** nft in namespace `ns`. */
function nft(ns: string, script: string): Promise<unknown> {
  return run("ip", "netns", "exec", ns, "nft", script);
}

/** The firewall: in the server's namespace, UDP dropped both ways, TCP only to `port`. */
function blockUdp(ns: string, port: number): Promise<unknown> {
  return nft(
    ns,
    "add table inet fw; " +
      "add chain inet fw in { type filter hook input priority 0; policy drop; }; " +
      "add chain inet fw out { type filter hook output priority 0; policy drop; }; " +
      "add rule inet fw in iifname lo accept; add rule inet fw out oifname lo accept; " +
      "add rule inet fw in ct state established,related accept; " +
      `add rule inet fw in tcp dport ${port} ct state new accept; ` +
      "add rule inet fw out ct state established,related accept; " +
      // The server's own connections to the origin (the target subnet).
      "add rule inet fw out ip daddr 10.202.0.0/24 accept; " +
      "add rule inet fw in ip saddr 10.202.0.0/24 accept",
  );
}

/** Writes a config file into `dir`; returns its path. */
async function config(dir: string, name: string, body: Record<string, unknown>): Promise<string> {
  const path = `${dir}/${name}.json`;
  await Deno.writeTextFile(path, JSON.stringify(body));
  return path;
}

/**
 * Registers a test on a fresh plain-veth testbed with a temporary state
 * directory; `fn` may start daemons on it with {@link startTunnel} through
 * `start` (stopped afterwards); everything is removed even when it fails.
 */
function bedTest(
  name: string,
  fn: (
    tb: Testbed,
    state: string,
    start: (opts: Parameters<typeof startTunnel>[1]) => ReturnType<typeof startTunnel>,
  ) => Promise<void>,
): void {
  Deno.test({
    name: `netns carriers: ${name}`,
    ignore: !enabled,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const tb = await Testbed.createVeth();
      const state = await Deno.makeTempDir();
      let bed: Awaited<ReturnType<typeof startTunnel>> | null = null;
      try {
        await fn(tb, state, async (opts) => (bed = await startTunnel(tb, opts)));
      } finally {
        await (bed as Awaited<ReturnType<typeof startTunnel>> | null)?.stop();
        await tb.close();
        await Deno.remove(state, { recursive: true });
      }
    },
  });
}

async function download(tb: Testbed, proxyPort: number, size: number, seed: number, out: string) {
  return await tb.exec(tb.client, "curl", [
    "-sS",
    "-m",
    "120",
    "--socks5-hostname",
    `127.0.0.1:${proxyPort}`,
    "-o",
    out,
    `http://${ADDR.target}:8080/bytes/${size}?seed=${seed}`,
  ]);
}

bedTest(
  "fake-TCP carries 64 MiB byte-exact through a firewall that drops UDP",
  async (tb, state, start) => {
    const out = `${state}/f.bin`;
    const pcap = `${state}/cap.pcap`;
    let dump: Deno.ChildProcess | null = null;
    try {
      await blockUdp(tb.server, 8443);
      const bed = await start({
        serverArgs: [
          "-c",
          await config(state, "server", {
            faketcp: { listen: `${ADDR.server}:8443`, stateDir: state },
          }),
        ],
        clientArgs: [
          "-c",
          await config(state, "client", {
            carrier: "faketcp",
            faketcp: { stateDir: state },
          }),
        ],
      });
      dump = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          tb.server,
          "tcpdump",
          "-i",
          "any",
          "-s",
          "128",
          "-c",
          "4000",
          "-w",
          pcap,
          "tcp",
          "port",
          "8443",
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      await sleep(500);
      const size = 64 * MiB;
      const r = await download(tb, bed.proxyPort, size, 5, out);
      assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
      assertEquals(await sha256Hex(await Deno.readFile(out)), await sha256Hex(payload(size, 5)));
      assert(bed.client.count(/carriers: faketcp/) === 1, "the client rode fake-TCP");
      // conntrack of the server's namespace saw a real established TCP flow.
      const ct = await run("ip", "netns", "exec", tb.server, "conntrack", "-L", "-p", "tcp");
      assert(/ESTABLISHED.*dport=8443/.test(ct), `conntrack shows the flow: ${ct}`);
      await dump.status;
      dump = null;
      const bad = await run(
        "tshark",
        "-r",
        pcap,
        "-o",
        "tcp.check_checksum:TRUE",
        "-Y",
        'tcp.checksum.status == "Bad" || ip.checksum.status == "Bad" || _ws.malformed || tcp.flags.reset == 1',
      );
      assertEquals(bad.trim(), "", "tshark finds no bad, malformed or reset segment");
      const all = await run("tshark", "-r", pcap, "-Y", "tcp");
      assert(all.split("\n").length > 1000, "the capture holds the transfer's segments");
    } finally {
      try {
        dump?.kill();
        await dump?.status;
      } catch {
        // ended
      }
    }
  },
);

bedTest(
  "UDP blocked mid-transfer → the session moves to fake-TCP, no new handshake",
  async (tb, state, start) => {
    const out = `${state}/f.bin`;
    const bed = await start({
      serverArgs: [
        "-c",
        await config(state, "server", {
          faketcp: { listen: `${ADDR.server}:8443`, stateDir: state },
        }),
      ],
      clientArgs: [
        "--keepalive",
        "1",
        "-c",
        await config(state, "client", {
          carrier: "auto",
          fallback: ["udp", "faketcp"],
          faketcp: { stateDir: state },
        }),
      ],
    });
    const size = 48 * MiB;
    const transfer = tb.exec(tb.client, "curl", [
      "-sS",
      "-m",
      "120",
      "--limit-rate",
      "8M",
      "--socks5-hostname",
      `127.0.0.1:${bed.proxyPort}`,
      "-o",
      out,
      `http://${ADDR.target}:8080/bytes/${size}?seed=6`,
    ]);
    await sleep(2000);
    const cutAt = bed.client.output.length;
    await blockUdp(tb.server, 8443);
    await bed.client.waitFor(/moved from udp to faketcp .*same session/, 20_000, cutAt);
    const r = await transfer;
    assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
    assertEquals(await sha256Hex(await Deno.readFile(out)), await sha256Hex(payload(size, 6)));
    const stats = (await bed.server.statsDump()).stats;
    assertEquals(stats.handshakes, 1, "no new handshake");
    assert(stats.migrations >= 1, `the session moved (migrations ${stats.migrations})`);
    assertEquals(bed.client.count(/connected to/), 1, "the client never reconnected");
  },
);

bedTest(
  "TLS carries 64 MiB through a TCP-443-only firewall; probes see the web origin",
  async (tb, state, start) => {
    const out = `${state}/f.bin`;
    const certs = await makeTestCerts(state, ["ostp.test", ADDR.server]);
    await blockUdp(tb.server, 443);
    const bed = await start({
      serverArgs: [
        "-c",
        await config(state, "server", {
          tls: {
            listen: `${ADDR.server}:443`,
            cert: certs.cert,
            key: certs.key,
            fallback: `${ADDR.target}:8080`,
          },
        }),
      ],
      clientArgs: [
        "-c",
        await config(state, "client", {
          carrier: "tls",
          tls: { port: 443, serverName: "ostp.test", ca: certs.ca },
        }),
      ],
    });
    const size = 64 * MiB;
    const r = await download(tb, bed.proxyPort, size, 7, out);
    assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
    assertEquals(await sha256Hex(await Deno.readFile(out)), await sha256Hex(payload(size, 7)));
    assertEquals(bed.client.count(/carriers: tls/), 1, "the client rode TLS");
    // A prober with curl: HTTPS to the server's port gets the fallback origin's answer.
    const probe = await tb.exec(tb.client, "curl", [
      "-sS",
      "--cacert",
      certs.ca,
      "--resolve",
      `ostp.test:443:${ADDR.server}`,
      "-o",
      `${state}/probe.bin`,
      "https://ostp.test:443/bytes/1000?seed=3",
    ]);
    assertEquals(probe.code, 0, new TextDecoder().decode(probe.stderr));
    assertEquals(
      await sha256Hex(await Deno.readFile(`${state}/probe.bin`)),
      await sha256Hex(payload(1000, 3)),
      "the web origin's own answer",
    );
  },
);

bedTest(
  "probes of the fake-TCP port (random bytes, HTTP, TLS hello) get no banner",
  async (tb, state, start) => {
    const bed = await start({
      serverArgs: [
        "-c",
        await config(state, "server", {
          faketcp: { listen: `${ADDR.server}:8443`, stateDir: state },
        }),
      ],
    });
    const target = `${ADDR.server}/8443`;
    // Plain TCP connect, random bytes, read for a second: nothing comes back.
    const raw = await tb.exec(tb.client, "bash", [
      "-c",
      `exec 3<>/dev/tcp/${target}; head -c 64 /dev/urandom >&3; timeout 1 cat <&3 | wc -c`,
    ]);
    assertEquals(new TextDecoder().decode(raw.stdout).trim(), "0", "no bytes for random bytes");
    // An HTTP request: no response at all.
    const http = await tb.exec(tb.client, "curl", [
      "-sS",
      "-m",
      "2",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      `http://${ADDR.server}:8443/`,
    ]);
    assertEquals(new TextDecoder().decode(http.stdout), "000", "no HTTP answer");
    // A TLS ClientHello: no ServerHello.
    const tls = await tb.exec(tb.client, "timeout", [
      "3",
      "openssl",
      "s_client",
      "-connect",
      `${ADDR.server}:8443`,
      "-servername",
      "ostp.test",
    ]);
    const text = new TextDecoder().decode(tls.stdout);
    assert(!/Server certificate|BEGIN CERTIFICATE|Cipher is [A-Z]/.test(text), text);
    const stats = (await bed.server.statsDump()).stats;
    assertEquals(stats.sessions, 1, "the real client's session only");
    assert(
      stats.drops.unauthenticated > 0,
      "the probes' data reached the server and was dropped",
    );
  },
);

bedTest(
  "UDP-over-TCP carries 32 MiB byte-exact through the UDP-dropping firewall",
  async (tb, state, start) => {
    const out = `${state}/f.bin`;
    await blockUdp(tb.server, 8443);
    const bed = await start({
      serverArgs: ["--uot-listen", `${ADDR.server}:8443`],
      clientArgs: ["--carrier", "uot"],
    });
    const size = 32 * MiB;
    const r = await download(tb, bed.proxyPort, size, 8, out);
    assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
    assertEquals(await sha256Hex(await Deno.readFile(out)), await sha256Hex(payload(size, 8)));
    assertEquals(bed.client.count(/carriers: uot/), 1, "the client rode UDP-over-TCP");
  },
);

Deno.test({
  name:
    "netns carriers: FEC 10:3 at 10% loss — a download completes and lost datagrams are rebuilt",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const imp = { delayMs: 10, loss: 0.1 };
    const tb = await Testbed.create(imp, imp, 41);
    const state = await Deno.makeTempDir();
    const out = `${state}/f.bin`;
    let bed: Awaited<ReturnType<typeof startTunnel>> | null = null;
    try {
      bed = await startTunnel(tb, {
        serverArgs: ["--fec-listen", `${ADDR.server}:8444`],
        clientArgs: ["-c", await config(state, "client", { fec: "10:3", fecPort: 8444 })],
      });
      const size = 4 * MiB;
      const r = await download(tb, bed.proxyPort, size, 9, out);
      assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
      assertEquals(await sha256Hex(await Deno.readFile(out)), await sha256Hex(payload(size, 9)));
      assertEquals(bed.client.count(/carriers: udp\+fec/), 1, "the client coded its datagrams");
      const stats = (await bed.server.statsDump()).stats;
      const fec = stats.carriers.find((c: { kind: string }) => c.kind === "udp+fec");
      assert(fec, JSON.stringify(stats.carriers));
      assertEquals(fec.counters.ratio, "10:3", "the server codes its direction 10:3 too");
      assert(fec.counters.recovered > 0, `recovered ${fec.counters.recovered}`);
      assert(fec.counters.paritySent > 0, "the server sends parity");
    } finally {
      await bed?.stop();
      await tb.close();
      await Deno.remove(state, { recursive: true });
    }
  },
});
