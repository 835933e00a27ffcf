/**
 * The fake-TCP carrier on real raw sockets (root only), in namespaces this
 * test makes and always removes: client and server namespaces joined by a
 * router namespace whose firewall drops all UDP and passes only TCP to the
 * server port (new) and established/related flows back. Both carrier ends
 * run in this process: each socket is created inside its namespace
 * (`netns` option), nft runs there through `ip netns exec`.
 *
 * - the carrier conformance suite;
 * - through the firewall: datagrams flow, conntrack in the router shows the
 *   flow ESTABLISHED, a tcpdump capture parses in tshark with no bad
 *   checksum or malformed segment, the RST tables are gone after close;
 * - a child holding a listener killed with SIGKILL leaves its table, which
 *   `HostJournal.recover` removes.
 *
 * `deno run -A tests/netns/faketcp_test.ts child NS JOURNAL` is that child.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { carrierConformance } from "../conformance/carrier.ts";
import {
  FakeTcpDialer,
  type FakeTcpLink,
  FakeTcpListener,
} from "../../shared/carrier/faketcp/faketcp.ts";
import { HostJournal } from "../../shared/host/journal.ts";
import { canUseNetns, run } from "../support/netns.ts";

const CLIENT_IP = "10.203.1.2";
const SERVER_IP = "10.203.2.2";

if (import.meta.main && Deno.args[0] === "child") {
  // The crash test's child: a listener holding its RST rule until killed.
  const [, ns, journal] = Deno.args;
  const l = await FakeTcpListener.open({ port: 0, journal, netns: ns });
  void l.run(() => {});
  console.log(`ready ${l.local.port}`);
  setInterval(() => {}, 1 << 30);
  await new Promise(() => {});
}

const enabled = !import.meta.main && await canUseNetns();
if (!import.meta.main && !enabled) {
  console.log("SKIPPED fake-TCP netns tests: need root and ip netns");
}

/** Client ⇄ router ⇄ server, the router's firewall passing only TCP to `port` (once known). */
class Net {
  readonly id = crypto.randomUUID().slice(0, 6);
  readonly client = `ftc-${this.id}`;
  readonly router = `ftr-${this.id}`;
  readonly server = `fts-${this.id}`;
  readonly dir = Deno.makeTempDirSync({ prefix: "ostp-faketcp-" });

  static async create(): Promise<Net> {
    const n = new Net();
    try {
      await n.setup();
    } catch (e) {
      await n.close();
      throw e;
    }
    return n;
  }

  private async setup(): Promise<void> {
    for (const ns of [this.client, this.router, this.server]) {
      await run("ip", "netns", "add", ns);
      await run("ip", "-n", ns, "link", "set", "lo", "up");
    }
    const [c, rc, rs, s] = [`ftc${this.id}`, `ftrc${this.id}`, `ftrs${this.id}`, `fts${this.id}`];
    await run(
      "ip",
      "link",
      "add",
      c,
      "netns",
      this.client,
      "type",
      "veth",
      "peer",
      "name",
      rc,
      "netns",
      this.router,
    );
    await run(
      "ip",
      "link",
      "add",
      s,
      "netns",
      this.server,
      "type",
      "veth",
      "peer",
      "name",
      rs,
      "netns",
      this.router,
    );
    await run("ip", "-n", this.client, "addr", "add", `${CLIENT_IP}/24`, "dev", c);
    await run("ip", "-n", this.router, "addr", "add", "10.203.1.1/24", "dev", rc);
    await run("ip", "-n", this.router, "addr", "add", "10.203.2.1/24", "dev", rs);
    await run("ip", "-n", this.server, "addr", "add", `${SERVER_IP}/24`, "dev", s);
    for (
      const [ns, dev] of [[this.client, c], [this.router, rc], [this.router, rs], [this.server, s]]
    ) {
      await run("ip", "-n", ns, "link", "set", dev, "up");
    }
    await run("ip", "-n", this.client, "route", "add", "default", "via", "10.203.1.1");
    await run("ip", "-n", this.server, "route", "add", "default", "via", "10.203.2.1");
    await run("ip", "netns", "exec", this.router, "sysctl", "-qw", "net.ipv4.ip_forward=1");
  }

  /** The router passes TCP to `port` and established flows; drops all else (UDP too). */
  async firewall(port: number): Promise<void> {
    await run(
      "ip",
      "netns",
      "exec",
      this.router,
      "nft",
      "add table inet fw; " +
        "add chain inet fw pass { type filter hook forward priority 0; policy drop; }; " +
        "add rule inet fw pass ct state invalid counter drop; " +
        "add rule inet fw pass ct state established,related counter accept; " +
        `add rule inet fw pass ip daddr ${SERVER_IP} tcp dport ${port} ct state new counter accept; ` +
        "add rule inet fw pass meta l4proto udp counter drop",
    );
  }

  async tables(ns: string): Promise<string> {
    return await run("ip", "netns", "exec", ns, "nft", "list", "tables");
  }

  async close(): Promise<void> {
    for (const ns of [this.client, this.router, this.server]) {
      await run("ip", "netns", "del", ns).catch(() => {});
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** A kernel TCP client in `ns` writing `bytes` to `host:port`, then closing. */
async function kernelTcpSend(ns: string, host: string, port: number, bytes: Uint8Array) {
  const p = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      ns,
      "timeout",
      "3",
      "bash",
      "-c",
      `exec 3<>/dev/tcp/${host}/${port} && cat >&3 && sleep 0.2`,
    ],
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const w = p.stdin.getWriter();
  await w.write(bytes);
  await w.close();
  await p.status;
}

carrierConformance("faketcp carrier", async () => {
  const net = await Net.create();
  try {
    const listener = await FakeTcpListener.open({
      hostname: SERVER_IP,
      port: 0,
      journal: `${net.dir}/server.jsonl`,
      netns: net.server,
    });
    await net.firewall(listener.local.port);
    const dialer = new FakeTcpDialer({ journal: `${net.dir}/client.jsonl`, netns: net.client });
    return {
      listener,
      dialer,
      server: { transport: "tcp", hostname: SERVER_IP, port: listener.local.port },
      mtu: 1350,
      sendStranger: (bytes) => kernelTcpSend(net.client, SERVER_IP, listener.local.port, bytes),
      async close() {
        listener.close();
        await listener.closedAndClean;
        await dialer.close();
        await net.close();
      },
    };
  } catch (e) {
    await net.close();
    throw e;
  }
}, { ignore: !enabled });

Deno.test({
  name: "faketcp: through a TCP-only stateful firewall, ESTABLISHED in conntrack, clean in tshark",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const net = await Net.create();
    let dump: Deno.ChildProcess | null = null;
    try {
      const listener = await FakeTcpListener.open({
        hostname: SERVER_IP,
        port: 0,
        journal: `${net.dir}/server.jsonl`,
        netns: net.server,
      });
      const port = listener.local.port;
      await net.firewall(port);
      const pcap = `${net.dir}/cap.pcap`;
      dump = new Deno.Command("ip", {
        args: ["netns", "exec", net.router, "tcpdump", "-i", "any", "-U", "-w", pcap, "tcp or udp"],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      await new Promise((r) => setTimeout(r, 500));
      const got: number[] = [];
      const served = listener.run((d, from) => {
        got.push(d.length);
        listener.send(d, from);
      });
      const { journal } = await HostJournal.open(`${net.dir}/client.jsonl`);
      const dialer = new FakeTcpDialer({ journal, netns: net.client });
      const link = await dialer.dial({ transport: "tcp", hostname: SERVER_IP, port });
      const back: number[] = [];
      const running = link.run((d) => back.push(d.length));
      assert((await net.tables(net.server)).includes(`ostp-faketcp-${port}`), "server RST table");
      assert((await net.tables(net.client)).includes(`ostp-faketcp-c${link.localPort}`));
      // A first exchange, as the session's handshake would be.
      link.send(new Uint8Array(100));
      for (let i = 0; i < 100 && back.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assertEquals(back, [100]);
      back.length = 0;
      got.length = 0;
      // Bulk one way (beyond the receiver's window, so its ACKs must keep conntrack's window),
      // then echoes.
      const N = 2000;
      for (let i = 0; i < N; i++) {
        link.send(new Uint8Array(1300).fill(i & 0xff));
        if (i % 64 === 63) await new Promise((r) => setTimeout(r, 1));
      }
      link.flush();
      const end = performance.now() + 5000;
      while (back.length < N && performance.now() < end) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assertEquals(got.length, N, "datagrams through the firewall");
      assert(back.length >= N * 0.99, `echoes back: ${back.length}`);
      // UDP does not pass the same firewall.
      const udp = await new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          net.client,
          "bash",
          "-c",
          `echo hi > /dev/udp/${SERVER_IP}/${port}`,
        ],
      }).output();
      assert(udp.success);
      const ct = await run("ip", "netns", "exec", net.router, "conntrack", "-L", "-p", "tcp");
      const line = ct.split("\n").find((l) => l.includes(`dport=${port}`)) ?? "";
      assert(/ESTABLISHED/.test(line) && /ASSURED/.test(line), `conntrack: ${ct}`);
      const fw = await run("ip", "netns", "exec", net.router, "nft", "list", "table", "inet", "fw");
      const invalid = /ct state invalid counter packets (\d+)/.exec(fw);
      assertEquals(invalid?.[1], "0", `no segment conntrack calls invalid:\n${fw}`);
      const udpDrop = /udp counter packets (\d+)/.exec(fw);
      assert(Number(udpDrop?.[1]) >= 1, "the UDP probe was dropped");
      link.close();
      await running;
      listener.close();
      await served;
      await listener.closedAndClean;
      await journal.undoAll();
      assert(!(await net.tables(net.server)).includes("ostp-faketcp"), "server table removed");
      assert(!(await net.tables(net.client)).includes("ostp-faketcp"), "client table removed");
      await new Promise((r) => setTimeout(r, 300));
      Deno.kill(dump.pid, "SIGINT");
      await dump.status;
      dump = null;
      const all = await run(
        "tshark",
        "-r",
        pcap,
        "-o",
        "tcp.check_checksum:TRUE",
        "-T",
        "fields",
        "-e",
        "frame.number",
      );
      const segments = all.trim().split("\n").length;
      assert(segments > N, `capture holds ${segments} packets`);
      const bad = await run(
        "tshark",
        "-r",
        pcap,
        "-o",
        "tcp.check_checksum:TRUE",
        "-Y",
        'tcp.checksum.status == "Bad" || ip.checksum.status == "Bad" || _ws.malformed || _ws.expert.severity >= error || tcp.flags.reset == 1',
      );
      assertEquals(bad.trim(), "", "tshark finds no bad segment");
      const hs = await run(
        "tshark",
        "-r",
        pcap,
        "-Y",
        "tcp.flags.syn == 1",
        "-T",
        "fields",
        "-e",
        "tcp.flags.str",
        "-e",
        "tcp.options",
      );
      // SYN and SYN-ACK with MSS 1460, SACK-permitted, timestamps, NOP, window scale 9.
      const lines = hs.trim().split("\n");
      assert(lines.some((l) => /^[·.]+S[·.]*\t/.test(l)), `SYN seen: ${hs}`);
      assert(lines.some((l) => /A[·.]*S/.test(l)), `SYN-ACK seen: ${hs}`);
      for (const l of lines) assert(/\t020405b40402080a[0-9a-f]{16}01030309$/.test(l), l);
    } finally {
      if (dump) {
        try {
          Deno.kill(dump.pid, "SIGKILL");
        } catch { /* gone */ }
        await dump.status;
      }
      await net.close();
    }
  },
});

Deno.test({
  name: "faketcp: a kernel TCP prober gets a handshake, ACKs and a FIN-ACK, never reply data",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const net = await Net.create();
    try {
      const listener = await FakeTcpListener.open({
        hostname: SERVER_IP,
        port: 0,
        journal: `${net.dir}/server.jsonl`,
        netns: net.server,
      });
      const port = listener.local.port;
      const got: string[] = [];
      // The session layer's dispatcher drops what no session claims: so does this one.
      const served = listener.run((d) => got.push(new TextDecoder().decode(d)));
      const probe = await new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          net.client,
          "timeout",
          "5",
          "bash",
          "-c",
          `exec 3<>/dev/tcp/${SERVER_IP}/${port} || exit 9; ` +
          `printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' >&3; timeout 1 cat <&3; echo "rc=$?"`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(probe.stdout);
      assertEquals(out.trim(), "rc=124", "connected, then nothing to read until the timeout");
      assertEquals(
        got.join(""),
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "the request went up as datagrams",
      );
      // The prober's close is answered (FIN-ACK) and the flow forgotten.
      for (let i = 0; i < 50 && listener.flowCount > 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assertEquals(listener.flowCount, 0);
      listener.close();
      await served;
      await listener.closedAndClean;
    } finally {
      await net.close();
    }
  },
});

Deno.test({
  name: "faketcp: keepalive keeps an idle link; a path that stops answering is reported dead",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const net = await Net.create();
    try {
      const listener = await FakeTcpListener.open({
        hostname: SERVER_IP,
        port: 0,
        journal: `${net.dir}/server.jsonl`,
        netns: net.server,
      });
      await net.firewall(listener.local.port);
      const served = listener.run(() => {});
      const dialer = new FakeTcpDialer({
        journal: `${net.dir}/client.jsonl`,
        netns: net.client,
        flow: { idleMs: 300, probeMs: 200, probes: 2 },
      });
      const link = await dialer.dial({
        transport: "tcp",
        hostname: SERVER_IP,
        port: listener.local.port,
      }) as FakeTcpLink;
      let deadAt = 0;
      link.onDead = () => (deadAt = performance.now());
      const running = link.run(() => {});
      // Idle for several keepalive periods: probes are answered, the link lives.
      await new Promise((r) => setTimeout(r, 1500));
      assert(!link.dead, "an idle link whose probes are answered stays up");
      assert(link.flow.segmentsOut >= 4, `probes sent: ${link.flow.segmentsOut}`);
      // The router forgets the flow (a NAT timing out): nothing passes any more.
      await run(
        "ip",
        "netns",
        "exec",
        net.router,
        "nft",
        "add table inet cut; add chain inet cut f { type filter hook forward priority -10; policy drop; }",
      );
      const cut = performance.now();
      const ended = await Promise.race([
        running.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 3000)),
      ]);
      assert(ended && link.dead && deadAt > 0, "the dead path was reported");
      assert(deadAt - cut < 1500, `reported after ${deadAt - cut} ms`);
      assert(!(await net.tables(net.client)).includes("ostp-faketcp-c"), "its RST rule is gone");
      listener.close();
      await served;
      await listener.closedAndClean;
      await dialer.close();
    } finally {
      await net.close();
    }
  },
});

Deno.test({
  name: "faketcp: a listener killed with SIGKILL leaves its RST table; recovery removes it",
  ignore: !enabled,
  async fn() {
    const net = await Net.create();
    const journal = `${net.dir}/crash.jsonl`;
    let child: Deno.ChildProcess | null = null;
    try {
      child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", new URL(import.meta.url).pathname, "child", net.server, journal],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const reader = child.stdout.getReader();
      let out = "";
      while (!/ready \d+/.test(out)) {
        const r = await reader.read();
        if (r.done) throw new Error(`child ended: ${out}`);
        out += new TextDecoder().decode(r.value);
      }
      reader.releaseLock();
      const port = /ready (\d+)/.exec(out)![1];
      assert((await net.tables(net.server)).includes(`ostp-faketcp-${port}`));
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel().catch(() => {});
      child = null;
      assert((await net.tables(net.server)).includes(`ostp-faketcp-${port}`), "left behind");
      const report = await HostJournal.recover(journal);
      assert(report !== null && report.undone.length === 1, JSON.stringify(report));
      assert(!(await net.tables(net.server)).includes("ostp-faketcp"), "recovered");
    } finally {
      if (child) {
        child.kill("SIGKILL");
        await child.status;
      }
      await net.close();
    }
  },
});
