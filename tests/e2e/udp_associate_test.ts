/**
 * End to end: SOCKS5 UDP ASSOCIATE through real ostp-server and ostp-client
 * processes, with real DNS queries answered by a local dnsmasq.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { freePort, startClient, startServer } from "../support/daemons.ts";
import { associate, Receiver, socksUdp } from "../support/socks_udp.ts";

async function run(cmd: string, args: string[]): Promise<boolean> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output();
    return out.success;
  } catch {
    return false;
  }
}

/** Path of dnsmasq, installing the package when missing and possible; null if unavailable. */
async function findDnsmasq(): Promise<string | null> {
  const where = async () => {
    for (const p of ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/usr/local/sbin/dnsmasq"]) {
      try {
        if (Deno.statSync(p).isFile) return p;
      } catch { /* not there */ }
    }
    return (await run("sh", ["-c", "command -v dnsmasq"])) ? "dnsmasq" : null;
  };
  const found = await where();
  if (found) return found;
  if (Deno.uid?.() === 0) {
    const env = ["env", "DEBIAN_FRONTEND=noninteractive"];
    if (!(await run(env[0], [...env.slice(1), "apt-get", "install", "-y", "-qq", "dnsmasq"]))) {
      await run("apt-get", ["update", "-qq"]);
      await run(env[0], [...env.slice(1), "apt-get", "install", "-y", "-qq", "dnsmasq"]);
    }
  }
  return await where();
}

const dnsmasq = await findDnsmasq();
if (!dnsmasq) {
  console.warn(
    "SKIPPED e2e UDP ASSOCIATE test: dnsmasq is not installed and could not be installed",
  );
}

/** A minimal DNS query for an A record. */
function dnsQuery(id: number, name: string): Uint8Array {
  const labels = name.split(".").map((l) => new TextEncoder().encode(l));
  const q = new Uint8Array(12 + labels.reduce((n, l) => n + 1 + l.length, 0) + 1 + 4);
  q[0] = id >> 8;
  q[1] = id & 0xff;
  q[2] = 0x01; // RD
  q[5] = 1; // QDCOUNT
  let p = 12;
  for (const l of labels) {
    q[p++] = l.length;
    q.set(l, p);
    p += l.length;
  }
  q[p++] = 0;
  q[p + 1] = 1; // QTYPE A
  q[p + 3] = 1; // QCLASS IN
  return q;
}

/** The id, rcode and A records of a DNS response. */
function dnsAnswers(r: Uint8Array): { id: number; rcode: number; a: string[] } {
  const id = (r[0] << 8) | r[1];
  const rcode = r[3] & 0x0f;
  const qd = (r[4] << 8) | r[5];
  const an = (r[6] << 8) | r[7];
  let p = 12;
  const skipName = () => {
    while (p < r.length) {
      const n = r[p];
      if (n === 0) return void p++;
      if ((n & 0xc0) === 0xc0) return void (p += 2);
      p += 1 + n;
    }
  };
  for (let i = 0; i < qd; i++) {
    skipName();
    p += 4;
  }
  const a: string[] = [];
  for (let i = 0; i < an && p < r.length; i++) {
    skipName();
    const type = (r[p] << 8) | r[p + 1];
    const len = (r[p + 8] << 8) | r[p + 9];
    p += 10;
    if (type === 1 && len === 4) a.push(`${r[p]}.${r[p + 1]}.${r[p + 2]}.${r[p + 3]}`);
    p += len;
  }
  return { id, rcode, a };
}

Deno.test({
  name: "e2e: SOCKS5 UDP ASSOCIATE carries DNS through the tunnel",
  ignore: !dnsmasq,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dnsPort = freePort("udp");
    const dns = new Deno.Command(dnsmasq!, {
      args: [
        "--no-daemon",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--except-interface=nonexistent0",
        `--port=${dnsPort}`,
        "--address=/ostp.test/10.9.8.7",
        "--host-record=udp.ostp.test,10.1.2.3",
        "--host-record=multi.ostp.test,10.4.4.4",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const dnsErr = new Response(dns.stderr).text();
    const closers: (() => Promise<unknown> | void)[] = [];
    try {
      // dnsmasq answers directly before the tunnel is involved.
      const direct = new Receiver();
      closers.push(() => direct.close());
      let ready = false;
      for (let i = 0; i < 50 && !ready; i++) {
        await direct.send(dnsQuery(1, "udp.ostp.test"), dnsPort);
        ready = (await direct.next(200)) !== null;
      }
      assert(ready, "dnsmasq did not answer");

      const server = await startServer();
      closers.push(() => server.daemon.stop());
      const client = await startClient(server.link);
      closers.push(() => client.daemon.stop());

      const app = new Receiver();
      closers.push(() => app.close());
      const { ctl, relayPort } = await associate(client.proxyPort);
      closers.push(() => {
        try {
          ctl.close();
        } catch { /* closed */ }
      });

      /** Sends `q` (retrying on loss) and returns the parsed reply with its SOCKS header. */
      const ask = async (id: number, name: string) => {
        for (let attempt = 0; attempt < 3; attempt++) {
          await app.send(socksUdp(dnsPort, dnsQuery(id, name)), relayPort);
          const r = await app.next(2000);
          if (r) return r;
        }
        throw new Error(`no answer for ${name}`);
      };

      await t.step("A records come back with the resolver's source address", async () => {
        const r = await ask(0x1234, "udp.ostp.test");
        assertEquals([...r.subarray(0, 10)], [
          0,
          0,
          0,
          1,
          127,
          0,
          0,
          1,
          dnsPort >> 8,
          dnsPort & 0xff,
        ]);
        const ans = dnsAnswers(r.subarray(10));
        assertEquals(ans.id, 0x1234);
        assertEquals(ans.rcode, 0);
        assertEquals(ans.a, ["10.1.2.3"]);
        const w = dnsAnswers((await ask(0x2345, "anything.ostp.test")).subarray(10));
        assertEquals([w.id, w.a], [0x2345, ["10.9.8.7"]]);
        const m = dnsAnswers((await ask(0x3456, "multi.ostp.test")).subarray(10));
        assertEquals([m.id, m.a], [0x3456, ["10.4.4.4"]]);
      });

      await t.step("several queries in flight at once all get answers", async () => {
        app.drain();
        const ids = Array.from({ length: 20 }, (_, i) => 0x4000 + i);
        for (const id of ids) {
          await app.send(socksUdp(dnsPort, dnsQuery(id, `n${id}.ostp.test`)), relayPort);
        }
        const seen = new Set<number>();
        while (seen.size < ids.length) {
          const r = await app.next(3000);
          if (!r) break;
          const a = dnsAnswers(r.subarray(10));
          assertEquals(a.a, ["10.9.8.7"]);
          seen.add(a.id);
        }
        assert(seen.size >= ids.length - 1, `answers for ${seen.size} of ${ids.length} queries`);
      });

      await t.step("a query to a port where nothing listens gets no answer", async () => {
        app.drain();
        const dead = freePort("udp");
        await app.send(socksUdp(dead, dnsQuery(0x5001, "udp.ostp.test")), relayPort);
        assertEquals(await app.next(1500), null);
        // The association still works afterwards.
        const r = dnsAnswers((await ask(0x5002, "udp.ostp.test")).subarray(10));
        assertEquals(r.a, ["10.1.2.3"]);
      });

      await t.step("fragments (FRAG != 0) and malformed headers are ignored", async () => {
        app.drain();
        await app.send(socksUdp(dnsPort, dnsQuery(0x6001, "udp.ostp.test"), 1), relayPort);
        await app.send(socksUdp(dnsPort, dnsQuery(0x6002, "udp.ostp.test"), 0x81), relayPort);
        await app.send(Uint8Array.of(0, 0, 0, 9, 1), relayPort);
        await app.send(Uint8Array.of(0, 0), relayPort);
        assertEquals(await app.next(1500), null);
        const r = dnsAnswers((await ask(0x6003, "udp.ostp.test")).subarray(10));
        assertEquals([r.id, r.a], [0x6003, ["10.1.2.3"]]);
      });

      await t.step("datagrams from another port of the client are ignored", async () => {
        const other = new Receiver();
        try {
          await other.send(socksUdp(dnsPort, dnsQuery(0x7001, "udp.ostp.test")), relayPort);
          assertEquals(await other.next(1000), null);
          assertEquals(await app.next(200), null);
        } finally {
          await other.close();
        }
      });

      await t.step("closing the control connection ends the association", async () => {
        ctl.close();
        await new Promise((r) => setTimeout(r, 300));
        app.drain();
        await app.send(socksUdp(dnsPort, dnsQuery(0x8001, "udp.ostp.test")), relayPort);
        assertEquals(await app.next(1500), null);
        // A new association works.
        const again = await associate(client.proxyPort);
        closers.push(() => {
          try {
            again.ctl.close();
          } catch { /* closed */ }
        });
        const fresh = new Receiver();
        closers.push(() => fresh.close());
        let got: Uint8Array | null = null;
        for (let i = 0; i < 3 && !got; i++) {
          await fresh.send(socksUdp(dnsPort, dnsQuery(0x8002, "udp.ostp.test")), again.relayPort);
          got = await fresh.next(2000);
        }
        assert(got, "no answer on a new association");
        assertEquals(dnsAnswers(got!.subarray(10)).a, ["10.1.2.3"]);
      });
    } finally {
      for (const c of closers.reverse()) {
        try {
          await c();
        } catch { /* best effort */ }
      }
      try {
        dns.kill("SIGTERM");
      } catch { /* gone */ }
      await dns.status;
      const err = await dnsErr;
      if (Deno.env.get("OSTP_TEST_VERBOSE")) console.error(err);
    }
  },
});
