/**
 * Live process lookup on Linux (loopback only): programs we start connect or send to a socket
 * of this test, and the resolver must name them from /proc — curl and a copy of curl under
 * another name (the issue's "renamed curl goes direct" case), over IPv4, IPv6 and a dual-stack
 * listener (the peer seen IPv4-mapped); bash and deno sending UDP; nobody for an unused port;
 * and, in a child with the client daemon's permission flags (no `--allow-all`), the lookup that
 * `createProcessResolver` sets up reading `/proc` through libc.
 */

import { assert, assertEquals } from "../support/assert.ts";
import { type ProcessInfo, queryFromAddrs } from "../../client/router/process.ts";
import { LinuxProcessResolver } from "../../client/router/process_linux.ts";
import { PERMS } from "../support/daemons.ts";

const MODULE = new URL("../../client/router/process_linux.ts", import.meta.url).href;
const FACTORY = new URL("../../client/router/process.ts", import.meta.url).href;
const FFI_MODULE = new URL("../../ffi/procfs_linux.ts", import.meta.url).href;

const LINUX = Deno.build.os === "linux";
const CURL = "/usr/bin/curl";
const HAVE_CURL = LINUX && isFile(CURL);
const HAVE_BASH = LINUX && isFile("/usr/bin/bash");
const HAVE_V6 = LINUX && hasLoopback6();

if (!LINUX) console.log("SKIP process_lookup_test: Linux only");
else if (!HAVE_CURL) console.log(`SKIP process lookup with curl: ${CURL} is absent`);
if (LINUX && !HAVE_V6) console.log("SKIP IPv6 process lookups: no ::1 on lo");

function isFile(p: string): boolean {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}

function hasLoopback6(): boolean {
  try {
    return Deno.readTextFileSync("/proc/net/if_inet6").split("\n").some((l) =>
      l.startsWith("00000000000000000000000000000001")
    );
  } catch {
    return false;
  }
}

/** Generous: a loaded host with tens of thousands of sockets reads /proc/net/tcp slowly. */
function resolver(): LinuxProcessResolver {
  return new LinuxProcessResolver({ timeoutMs: 15_000 });
}

/**
 * Runs `curl` (at `exe`) against a listener on `listenHost`, connecting to `connectHost`,
 * and looks up the accepted connection's peer while curl waits for the answer.
 */
async function lookupCurl(
  r: LinuxProcessResolver,
  exe: string,
  listenHost: string,
  connectHost: string,
): Promise<{ info: ProcessInfo | null; pid: number; peer: string }> {
  const listener = Deno.listen({ hostname: listenHost, port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const url = `http://${connectHost.includes(":") ? `[${connectHost}]` : connectHost}:${port}/`;
  const child = new Deno.Command(exe, {
    args: ["-s", "-g", "--noproxy", "*", "--max-time", "30", "-o", "/dev/null", url],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const conn = await listener.accept();
    try {
      await conn.read(new Uint8Array(4096)); // the request: curl now waits for us
      const peer = conn.remoteAddr as Deno.NetAddr;
      const info = await r.lookup(queryFromAddrs("tcp", peer, conn.localAddr as Deno.NetAddr));
      await conn.write(
        new TextEncoder().encode("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"),
      );
      return { info, pid: child.pid, peer: peer.hostname };
    } finally {
      conn.close();
    }
  } finally {
    listener.close();
    await child.status;
  }
}

/** Starts `cmd`, which sends one datagram to `sock` and then waits for its stdin to close. */
async function lookupUdpSender(
  r: LinuxProcessResolver,
  sock: Deno.DatagramConn,
  cmd: string,
  args: string[],
): Promise<{ info: ProcessInfo | null; pid: number }> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: "piped",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  try {
    const [, from] = await sock.receive();
    const info = await r.lookup(
      queryFromAddrs("udp", from as Deno.NetAddr, sock.addr as Deno.NetAddr),
    );
    return { info, pid: child.pid };
  } finally {
    await child.stdin.close();
    await child.status;
  }
}

Deno.test({
  name: "process lookup: a renamed curl is named by its file name, plain curl as curl",
  ignore: !HAVE_CURL,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ostp-proc-e2e-" });
    try {
      const renamed = `${dir}/renamed-fetcher`;
      await Deno.copyFile(CURL, renamed);
      await Deno.chmod(renamed, 0o755);
      const r = resolver();

      const a = await lookupCurl(r, renamed, "127.0.0.1", "127.0.0.1");
      assertEquals(a.info, { pid: a.pid, name: "renamed-fetcher", path: renamed });

      const b = await lookupCurl(r, CURL, "127.0.0.1", "127.0.0.1");
      const real = Deno.realPathSync(CURL);
      assertEquals(b.info, { pid: b.pid, name: real.slice(real.lastIndexOf("/") + 1), path: real });
      assertEquals(b.info?.name, "curl");
      assert(r.stats.linksRead > 0 && r.stats.tableReads >= 2, JSON.stringify(r.stats));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "process lookup: IPv6 peer, and an IPv4 peer seen mapped on a dual-stack listener",
  ignore: !HAVE_CURL || !HAVE_V6,
  async fn() {
    const r = resolver();
    const v6 = await lookupCurl(r, CURL, "::1", "::1");
    assertEquals(v6.peer, "::1");
    assertEquals(v6.info?.name, "curl");
    assertEquals(v6.info?.pid, v6.pid);

    const mapped = await lookupCurl(r, CURL, "::", "127.0.0.1");
    assertEquals(mapped.peer, "::ffff:127.0.0.1", "the listener sees the IPv4 peer mapped");
    assertEquals(mapped.info?.name, "curl");
    assertEquals(mapped.info?.pid, mapped.pid);
  },
});

Deno.test({
  name: "process lookup: UDP datagrams from bash (/dev/udp) and from deno",
  ignore: !LINUX,
  async fn() {
    const r = resolver();
    const sock = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    try {
      const port = (sock.addr as Deno.NetAddr).port;
      if (HAVE_BASH) {
        // bash itself opens (and connects) the socket, sends, then waits in the `read` builtin.
        const b = await lookupUdpSender(r, sock, "/usr/bin/bash", [
          "-c",
          `exec 3>/dev/udp/127.0.0.1/${port}; printf hi >&3; read -r _ || true`,
        ]);
        assertEquals(b.info?.name, "bash");
        assertEquals(b.info?.pid, b.pid);
      } else console.log("SKIP UDP lookup from bash: /usr/bin/bash is absent");

      const d = await lookupUdpSender(r, sock, Deno.execPath(), [
        "eval",
        "--unstable-net",
        `const s = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
         await s.send(new Uint8Array([1]), { transport: "udp", hostname: "127.0.0.1", port: ${port} });
         for await (const _ of Deno.stdin.readable) { /* wait for EOF */ }
         s.close();`,
      ]);
      const exe = Deno.execPath();
      assertEquals(d.info, { pid: d.pid, name: exe.slice(exe.lastIndexOf("/") + 1), path: exe });
    } finally {
      sock.close();
    }
  },
});

Deno.test({
  name: "process lookup: UDP over IPv6 from an unconnected socket",
  ignore: !LINUX || !HAVE_V6,
  async fn() {
    const r = resolver();
    const sock = Deno.listenDatagram({ hostname: "::1", port: 0, transport: "udp" });
    try {
      const port = (sock.addr as Deno.NetAddr).port;
      const d = await lookupUdpSender(r, sock, Deno.execPath(), [
        "eval",
        "--unstable-net",
        `const s = Deno.listenDatagram({ hostname: "::1", port: 0, transport: "udp" });
         await s.send(new Uint8Array([1]), { transport: "udp", hostname: "::1", port: ${port} });
         for await (const _ of Deno.stdin.readable) { /* wait for EOF */ }
         s.close();`,
      ]);
      assertEquals(d.info?.pid, d.pid);
    } finally {
      sock.close();
    }
  },
});

Deno.test({
  name: "process lookup: a port nobody owns answers null",
  ignore: !LINUX,
  async fn() {
    const r = resolver();
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const ours = listener.addr as Deno.NetAddr;
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const unused = (probe.addr as Deno.NetAddr).port;
    probe.close();
    try {
      const peer: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: unused };
      assertEquals(await r.lookup(queryFromAddrs("tcp", peer, ours)), null);
      assertEquals(await r.lookup(queryFromAddrs("udp", peer, ours)), null);
      assertEquals(r.stats.notFound, 2);
    } finally {
      listener.close();
    }
  },
});

Deno.test({
  name: "process lookup: with --allow-read only, Deno's /proc guard gives a ProcAccessError",
  ignore: !LINUX,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ostp-proc-perm-" });
    try {
      const script = `${dir}/probe.ts`;
      await Deno.writeTextFile(
        script,
        `import { LinuxProcessResolver } from ${JSON.stringify(MODULE)};
         const r = new LinuxProcessResolver();
         try {
           await r.lookup({ network: "tcp", local: { host: "127.0.0.1", port: 9 }, remote: { host: "127.0.0.1", port: 9 } });
           console.log("no error");
         } catch (e) {
           console.log((e as Error).name);
         }`,
      );
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--no-config", "--allow-read", script],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout).trim();
      assertEquals(text, "ProcAccessError", new TextDecoder().decode(out.stderr));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Kills a child of this test, if it still runs. */
function kill(p: Deno.ChildProcess): void {
  try {
    p.kill("SIGKILL");
  } catch {
    // already exited
  }
}

/** Lines of a child's stdout, one at a time. */
function lineReader(stream: ReadableStream<Uint8Array>): () => Promise<string | null> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  return async () => {
    for (;;) {
      const nl = buffered.indexOf("\n");
      if (nl !== -1) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        return line;
      }
      const { value, done } = await reader.read();
      if (done) return buffered === "" ? null : buffered;
      buffered += value;
    }
  };
}

Deno.test({
  name: "process lookup: with the client's permission flags (no --allow-all), /proc through FFI",
  ignore: !HAVE_CURL,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ostp-proc-ffi-" });
    try {
      const renamed = `${dir}/renamed-fetcher`;
      await Deno.copyFile(CURL, renamed);
      await Deno.chmod(renamed, 0o755);
      const script = `${dir}/lookup.ts`;
      // The child listens, reports its port, and names the peer of the connection it accepts; it
      // may not spawn programs (no --allow-run), so this test starts the renamed curl.
      await Deno.writeTextFile(
        script,
        `import { createProcessResolver, queryFromAddrs } from ${JSON.stringify(FACTORY)};
         import { defaultProcFsProbe, denoProcFs, selectProcFs } from ${JSON.stringify(MODULE)};
         import { LibcProcFs } from ${JSON.stringify(FFI_MODULE)};
         const fs = await selectProcFs();
         const resolver = await createProcessResolver({ timeoutMs: 15_000 });
         const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
         console.log(JSON.stringify({
           port: listener.addr.port,
           denoReads: defaultProcFsProbe.denoReads("/proc"),
           fs: fs instanceof LibcProcFs ? "libc" : fs === denoProcFs ? "deno" : "other",
         }));
         const conn = await listener.accept();
         await conn.read(new Uint8Array(4096));
         let out;
         try {
           const q = queryFromAddrs("tcp", conn.remoteAddr, conn.localAddr);
           out = { info: await resolver.lookup(q) };
         } catch (e) {
           out = { error: e.name + ": " + e.message };
         }
         console.log(JSON.stringify(out));
         const answer = "HTTP/1.1 204 No Content\\r\\nConnection: close\\r\\n\\r\\n";
         await conn.write(new TextEncoder().encode(answer));
         conn.close();
         listener.close();`,
      );
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "--no-config", ...PERMS, script],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const stderr = new Response(child.stderr).text();
      const next = lineReader(child.stdout);
      let curl: Deno.ChildProcess | undefined;
      let ok = false;
      // A child stuck in accept (curl never came) must not hold the test forever.
      const watchdog = setTimeout(() => kill(child), 60_000);
      try {
        const first = await next();
        if (first === null) throw new Error(`the child said nothing: ${await stderr}`);
        const ready = JSON.parse(first);
        assertEquals(ready.denoReads, false, "Deno's API may not read /proc without --allow-all");
        assertEquals(ready.fs, "libc");
        curl = new Deno.Command(renamed, {
          args: ["-s", "--noproxy", "*", "--max-time", "30", "-o", "/dev/null"].concat(
            `http://127.0.0.1:${ready.port}/`,
          ),
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).spawn();
        // curl ends only after the answer; the grace lets the child's line arrive first.
        const curlDone = curl.status.then((st) =>
          new Promise<string>((r) => setTimeout(() => r(`curl exited ${st.code}`), 2000))
        );
        const second = await Promise.race([next(), curlDone]);
        assert(second !== null && second.startsWith("{"), `no lookup answer (${second})`);
        assertEquals(JSON.parse(second), {
          info: { pid: curl.pid, name: "renamed-fetcher", path: renamed },
        });
        ok = true;
      } finally {
        if (!ok) {
          kill(child);
          if (curl) kill(curl);
        }
        if (curl) await curl.status;
        const status = await child.status;
        clearTimeout(watchdog);
        const err = await stderr;
        if (ok) assert(status.success, `child failed: ${err}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
