/**
 * The TLS carrier: the conformance suite over real TLS 1.3 on loopback (a
 * throwaway CA), then what a prober sees: curl over HTTPS, random bytes
 * after the handshake, silence, and a client whose first frame the server
 * does not recognize all reach the fallback web origin, byte for byte, while
 * a real link keeps working beside them.
 * @module
 */
import { assert, assertEquals } from "../support/assert.ts";
import { carrierConformance } from "../conformance/carrier.ts";
import { TlsDialer, TlsListener } from "../../shared/carrier/tls.ts";
import { makeTestCerts, type TestCerts } from "../support/certs.ts";

const dir = await Deno.makeTempDir({ prefix: "ostp-tls-test-" });
let certs: TestCerts | null = null;
try {
  certs = await makeTestCerts(dir, ["ostp.test", "127.0.0.1"]);
} catch (e) {
  console.log(`SKIPPED TLS carrier tests: ${(e as Error).message}`);
}
const pem = async (c: TestCerts) => ({
  cert: await Deno.readTextFile(c.cert),
  key: await Deno.readTextFile(c.key),
  ca: await Deno.readTextFile(c.ca),
});

/** Frames the suite sends start with anything but 0xEE; the test admits those. */
const admit = (frame: Uint8Array) => frame[0] !== 0xee;

carrierConformance("tls carrier", async () => {
  const p = await pem(certs!);
  const listener = TlsListener.open({
    hostname: "127.0.0.1",
    port: 0,
    cert: p.cert,
    key: p.key,
    admit,
    fallback: null,
    firstBytesMs: 300,
  });
  return {
    listener,
    dialer: new TlsDialer({ serverName: "ostp.test", caCerts: [p.ca], connectTimeoutMs: 3000 }),
    server: { transport: "tcp", hostname: "127.0.0.1", port: listener.local.port },
    mtu: 1350,
    async sendStranger(bytes: Uint8Array) {
      const c = await Deno.connectTls({
        hostname: "127.0.0.1",
        port: listener.local.port,
        caCerts: [p.ca],
      });
      try {
        await c.handshake();
        if (bytes.length > 0) await c.write(bytes);
        await new Promise((r) => setTimeout(r, 20));
      } finally {
        c.close();
      }
    },
    close: () => Promise.resolve(),
  };
}, { ignore: certs === null });

/** A web origin that answers every request with a fixed body naming the path. */
function startOrigin() {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) => new Response(`hello from the web origin: ${new URL(req.url).pathname}`),
  );
  return { port: server.addr.port, close: () => server.shutdown() };
}

async function sh(cmd: string, args: string[], input?: Uint8Array) {
  const p = new Deno.Command(cmd, {
    args,
    stdin: input ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input) {
    const w = p.stdin.getWriter();
    await w.write(input);
    await new Promise((r) => setTimeout(r, 1500));
    await w.close();
  }
  const out = await p.output();
  return {
    code: out.code,
    out: new TextDecoder().decode(out.stdout),
    err: new TextDecoder().decode(out.stderr),
  };
}

Deno.test({
  name: "tls: strangers get the fallback web server, byte for byte; a real link works beside them",
  ignore: certs === null,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const p = await pem(certs!);
    const origin = startOrigin();
    const listener = TlsListener.open({
      hostname: "127.0.0.1",
      port: 0,
      cert: p.cert,
      key: p.key,
      admit,
      fallback: { hostname: "127.0.0.1", port: origin.port },
      firstBytesMs: 500,
    });
    const port = listener.local.port;
    const seen: Uint8Array[] = [];
    const run = listener.run((d, from) => {
      seen.push(d.slice());
      listener.send(d, from);
    });
    try {
      // 1. curl over HTTPS: the origin's answer, through our certificate.
      const curl = await sh("curl", [
        "-sS",
        "--cacert",
        certs!.ca,
        "--resolve",
        `ostp.test:${port}:127.0.0.1`,
        `https://ostp.test:${port}/probe`,
      ]);
      assertEquals(curl.code, 0, curl.err);
      assertEquals(curl.out, "hello from the web origin: /probe");
      // 2. A real link still works.
      const link = await new TlsDialer({ serverName: "ostp.test", caCerts: [p.ca] }).dial({
        transport: "tcp",
        hostname: "127.0.0.1",
        port,
      });
      const echoes: number[] = [];
      const linkRun = link.run((d) => echoes.push(d.length));
      link.send(new Uint8Array(100).fill(1));
      link.send(new Uint8Array(200).fill(2));
      await new Promise((r) => setTimeout(r, 200));
      assertEquals(echoes, [100, 200]);
      // 3. openssl s_client with random bytes after the handshake: the origin answers them
      //    (an HTTP 400 from Deno.serve), nothing else.
      const junk = crypto.getRandomValues(new Uint8Array(64));
      junk[0] = 0x47; // "G…": not a frame
      const s = await sh("openssl", [
        "s_client",
        "-quiet",
        "-connect",
        `127.0.0.1:${port}`,
        "-servername",
        "ostp.test",
        "-CAfile",
        certs!.ca,
      ], junk);
      assert(
        /^HTTP\/1\.1 400/m.test(s.out),
        `the origin's answer to junk: ${JSON.stringify(s.out)}`,
      );
      // 4. A client whose first frame the server does not recognize: handed over too.
      const c = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [p.ca] });
      const req = new TextEncoder().encode(
        "GET /framed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      );
      const bad = new Uint8Array(2 + 3);
      bad.set([0, 3, 0xee, 1, 2]);
      await c.write(bad); // a valid frame, refused by admit: then an HTTP request follows
      await c.write(req);
      const answer = await readAll(c);
      assert(
        /400|hello from the web origin/.test(answer),
        `handed over: ${JSON.stringify(answer)}`,
      );
      // 5. Silence: after firstBytesMs the connection goes to the origin, which waits for a
      //    request like any web server; our bytes then get its answer.
      const q = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [p.ca] });
      await q.handshake();
      await new Promise((r) => setTimeout(r, 700));
      await q.write(
        new TextEncoder().encode("GET /late HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
      );
      const late = await readAll(q);
      assert(
        late.includes("hello from the web origin: /late"),
        `late request: ${JSON.stringify(late)}`,
      );
      assertEquals(seen.length, 2, "only the real link's datagrams reached the server");
      assert(listener.counters.fallbacks >= 4, `fallbacks ${listener.counters.fallbacks}`);
      link.close();
      await linkRun;
    } finally {
      listener.close();
      await run;
      await origin.close();
    }
  },
});

async function readAll(c: Deno.Conn): Promise<string> {
  const parts: string[] = [];
  const b = new Uint8Array(4096);
  const d = new TextDecoder();
  try {
    for (;;) {
      const n = await c.read(b);
      if (n === null) break;
      parts.push(d.decode(b.subarray(0, n)));
    }
  } catch {
    // reset
  } finally {
    try {
      c.close();
    } catch {
      // closed
    }
  }
  return parts.join("");
}

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch {
    // gone
  }
});
