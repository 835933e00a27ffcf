/**
 * Linux process lookup: /proc/net parsing on text captured from a real host (IPv4, IPv6,
 * IPv4-mapped, TIME_WAIT, UDP), the streaming matcher, the shared address matching, and the
 * resolver over a hand-made /proc tree (fd links, exe, the comm fallback).
 */

import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import {
  canonicalHost,
  FakeProcessResolver,
  type PreparedQuery,
  prepareQuery,
  type ProcessQuery,
  queryFromAddrs,
  socketMatchScore,
} from "../../client/router/process.ts";
import {
  decodeProcAddress,
  exeInfo,
  LinuxProcessResolver,
  parseProcNet,
  parseProcNetLine,
  parseSocketLink,
  ProcAccessError,
  type ProcFs,
  ProcNetMatcher,
  tablesFor,
} from "../../client/router/process_linux.ts";

// Captured on x86-64 (little-endian), Linux 6.18: a ::1 listener and connection, a dual-stack
// listener with an IPv4 client (mapped), a TIME_WAIT row.
const TCP6 =
  `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:9643 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3665357 1 000000007e19fa25 100 0 0 10 0
   1: 00000000000000000000000000000000:89F3 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3665360 1 0000000090a24bf7 100 0 0 10 0
   2: 00000000000000000000000001000000:9643 00000000000000000000000001000000:813A 01 00000000:00000000 00:00000000 00000000     0        0 3665359 1 0000000010a21e80 20 0 0 10 -1
   3: 0000000000000000FFFF00000100007F:89F3 0000000000000000FFFF00000100007F:BEBC 01 00000000:00000000 00:00000000 00000000     0        0 3665362 1 00000000fdd4b244 20 0 0 10 -1
   4: 00000000000000000000000001000000:87F2 00000000000000000000000001000000:9319 06 00000000:00000000 03:00001695 00000000     0        0 0 3 00000000d0611f0c
   5: 00000000000000000000000001000000:813A 00000000000000000000000001000000:9643 01 00000000:00000000 00:00000000 00000000     0        0 3665358 2 00000000ba6f385b 20 0 0 10 -1
`;

const TCP =
  `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 0100007F:A681 00000000:0000 0A 00000000:0000000D 00:00000000 00000000     0        0 1728172 14 0000000020ce4a18 100 0 0 10 0                  
15263: 0100007F:BEBC 0100007F:89F3 01 00000000:00000000 00:00000000 00000000  1000        0 3665361 2 0000000025cb821a 20 0 0 10 -1                  
   6: 0100007F:8187 0100007F:E0AE 06 00000000:00000000 03:000005BA 00000000     0        0 0 3 0000000021ebb26f                                      
`;

const UDP =
  `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            
 1074: 0100007F:E8F1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3665363 2 00000000669ee8de 0       
 8980: 00000000:C7D3 00000000:0000 07 00000000:00048000 00:00000000 00000000     0        0 3655045 2 00000000ba5a8fa5 0       
 9036: 0100007F:480B 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 3653954 2 000000000a55dfce 0       
`;

const UDP6 =
  `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 8910: 00000000000000000000000000000000:C78D 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3665364 2 0000000007ef8070 0
`;

function prep(q: ProcessQuery): PreparedQuery {
  const p = prepareQuery(q);
  assert(p, `query should prepare: ${JSON.stringify(q)}`);
  return p;
}

Deno.test("decodeProcAddress: IPv4, IPv6, mapped, any, both byte orders, malformed", () => {
  assertEquals(decodeProcAddress("0100007F:A681", true), { host: "127.0.0.1", port: 0xa681 });
  assertEquals(decodeProcAddress("7F000001:0050", false), { host: "127.0.0.1", port: 80 });
  assertEquals(decodeProcAddress("0200A8C0:01BB", true), { host: "192.168.0.2", port: 443 });
  assertEquals(decodeProcAddress("00000000:0000", true), { host: "0.0.0.0", port: 0 });
  assertEquals(
    decodeProcAddress("00000000000000000000000001000000:9643", true),
    { host: "::1", port: 0x9643 },
  );
  assertEquals(
    decodeProcAddress("0000000000000000FFFF00000100007F:89F3", true),
    { host: "127.0.0.1", port: 0x89f3 },
  );
  assertEquals(
    decodeProcAddress("00000000000000000000000000000000:0000", true),
    { host: "::", port: 0 },
  );
  // 2001:db8::1234:5678 — word 0 is 0x20010db8 in memory order 20 01 0d b8.
  assertEquals(
    decodeProcAddress("B80D0120000000000000000078563412:0035", true),
    { host: "2001:db8::1234:5678", port: 53 },
  );
  assertEquals(
    decodeProcAddress("20010DB8000000000000000012345678:0035", false),
    { host: "2001:db8::1234:5678", port: 53 },
  );
  assertEquals(decodeProcAddress("0100007F", true), null);
  assertEquals(decodeProcAddress("0100007G:0050", true), null);
  assertEquals(decodeProcAddress("0100007F:50", true), null);
  assertEquals(decodeProcAddress("01000:0050", true), null);
});

Deno.test("parseProcNet: captured tcp, tcp6, udp, udp6", () => {
  const tcp6 = parseProcNet(TCP6, "tcp6", true);
  assertEquals(tcp6.length, 6);
  assertEquals(tcp6[0], {
    table: "tcp6",
    local: { host: "::1", port: 38467 },
    remote: { host: "::", port: 0 },
    state: 0x0a,
    uid: 0,
    inode: "3665357",
  });
  assertEquals(tcp6[3].local, { host: "127.0.0.1", port: 0x89f3 });
  assertEquals(tcp6[3].remote, { host: "127.0.0.1", port: 48828 });
  assertEquals(tcp6[4].state, 6);
  assertEquals(tcp6[4].inode, "0");

  const tcp = parseProcNet(TCP, "tcp", true);
  assertEquals(tcp.length, 3);
  assertEquals(tcp[1], {
    table: "tcp",
    local: { host: "127.0.0.1", port: 48828 },
    remote: { host: "127.0.0.1", port: 35315 },
    state: 1,
    uid: 1000,
    inode: "3665361",
  });

  const udp = parseProcNet(UDP, "udp", true);
  assertEquals(udp.map((s) => `${s.local.host}:${s.local.port} ${s.state} ${s.inode}`), [
    "127.0.0.1:59633 7 3665363",
    "0.0.0.0:51155 7 3655045",
    "127.0.0.1:18443 1 3653954",
  ]);
  assertEquals(udp[2].remote, { host: "127.0.0.1", port: 53 });
  const udp6 = parseProcNet(UDP6, "udp6", true);
  assertEquals(udp6[0].local, { host: "::", port: 51085 });

  assertEquals(parseProcNetLine(TCP.split("\n")[0], "tcp", true), null);
  assertEquals(parseProcNetLine("", "tcp", true), null);
  assertEquals(parseProcNetLine("   0: 0100007F:A681 00000000:0000 0A", "tcp", true), null);
  assertEquals(
    parseProcNetLine(
      "   0: 0100007F:A681 00000000:0000 ZZ 00000000:00000000 00:00000000 00000000 0 0 1 1",
      "tcp",
      true,
    ),
    null,
  );
});

Deno.test("canonicalHost and the shared socket scoring", () => {
  assertEquals(canonicalHost("::ffff:127.0.0.1"), "127.0.0.1");
  assertEquals(canonicalHost("[::FFFF:7f00:1]"), "127.0.0.1");
  assertEquals(canonicalHost("fe80::1%eth0"), "fe80::1");
  assertEquals(canonicalHost("0:0:0:0:0:0:0:1"), "::1");
  assertEquals(canonicalHost("localhost"), null);
  assertEquals(
    prepareQuery({
      network: "tcp",
      local: { host: "x", port: 1 },
      remote: { host: "::1", port: 2 },
    }),
    null,
  );
  assertEquals(
    prepareQuery({
      network: "tcp",
      local: { host: "::1", port: 0 },
      remote: { host: "::1", port: 2 },
    }),
    null,
  );

  const tcp = prep({
    network: "tcp",
    local: { host: "::ffff:127.0.0.1", port: 5000 },
    remote: { host: "127.0.0.1", port: 1080 },
  });
  assertEquals(tablesFor(tcp), ["tcp", "tcp6"]);
  assertEquals(socketMatchScore(tcp, "127.0.0.1", 5000, "127.0.0.1", 1080), 6);
  assertEquals(socketMatchScore(tcp, "127.0.0.1", 1080, "127.0.0.1", 5000), 0, "our own end");
  assertEquals(socketMatchScore(tcp, "127.0.0.1", 5000, "127.0.0.1", 1081), 0);
  assertEquals(socketMatchScore(tcp, "127.0.0.1", 5000, "0.0.0.0", 0), 0, "TCP must be connected");
  assertEquals(socketMatchScore(tcp, "0.0.0.0", 5000, "127.0.0.1", 1080), 0, "no wildcard for TCP");
  const anyOurs = prep({
    network: "tcp",
    local: { host: "127.0.0.1", port: 5000 },
    remote: { host: "::", port: 0 },
  });
  assertEquals(socketMatchScore(anyOurs, "127.0.0.1", 5000, "127.0.0.1", 1080), 6);

  const udp = prep({
    network: "udp",
    local: { host: "127.0.0.1", port: 5000 },
    remote: { host: "127.0.0.1", port: 53 },
  });
  assertEquals(tablesFor(udp), ["udp", "udp6"]);
  assertEquals(socketMatchScore(udp, "127.0.0.1", 5000, "127.0.0.1", 53), 6);
  assertEquals(socketMatchScore(udp, "127.0.0.1", 5000, "0.0.0.0", 0), 4);
  assertEquals(socketMatchScore(udp, "0.0.0.0", 5000, "0.0.0.0", 0), 1);
  assertEquals(socketMatchScore(udp, "::", 5000, "::", 0), 1, "dual-stack wildcard");
  assertEquals(socketMatchScore(udp, "127.0.0.1", 5000, "127.0.0.1", 54), 0, "connected elsewhere");
  const udp6 = prep({
    network: "udp",
    local: { host: "::1", port: 5000 },
    remote: { host: "::1", port: 53 },
  });
  assertEquals(tablesFor(udp6), ["udp6"]);
  assertEquals(
    socketMatchScore(udp6, "0.0.0.0", 5000, "0.0.0.0", 0),
    0,
    "IPv4 wildcard, IPv6 client",
  );
});

Deno.test("ProcNetMatcher: chunked text, several queries, best match, TIME_WAIT skipped", () => {
  const qs = [
    // an AF_INET6 socket talking to a mapped address (here: the dual-stack listener's
    // accepted end, asked as if it were a client)
    prep({
      network: "tcp",
      local: { host: "::ffff:127.0.0.1", port: 35315 },
      remote: { host: "127.0.0.1", port: 48828 },
    }),
    // the ::1 client
    prep({
      network: "tcp",
      local: { host: "::1", port: 0x813a },
      remote: { host: "::1", port: 38467 },
    }),
    // only a TIME_WAIT row has these ports
    prep({
      network: "tcp",
      local: { host: "::1", port: 0x87f2 },
      remote: { host: "::1", port: 0x9319 },
    }),
  ];
  for (const size of [1, 7, 150, 100000]) {
    const m = new ProcNetMatcher("tcp6", qs, true);
    for (let i = 0; i < TCP6.length && !m.done; i += size) m.push(TCP6.slice(i, i + size));
    m.end();
    assertEquals(m.result(0)?.inode, "3665362", `chunk ${size}`);
    assertEquals(m.result(1)?.inode, "3665358", `chunk ${size}`);
    assertEquals(m.result(2), null, `chunk ${size}`);
  }
  // The IPv4 client of that listener, which saw it mapped: its socket is in the IPv4 table.
  const client = prep({
    network: "tcp",
    local: { host: "::ffff:127.0.0.1", port: 48828 },
    remote: { host: "::ffff:127.0.0.1", port: 35315 },
  });
  const v4 = new ProcNetMatcher("tcp", [client], true);
  assert(v4.push(TCP), "an exact TCP match ends the scan");
  assertEquals(v4.result(0)?.inode, "3665361");
  assertEquals(v4.result(0)?.uid, 1000);

  // UDP: the exact local socket beats a wildcard one, and the last line needs no newline.
  const wild = prep({
    network: "udp",
    local: { host: "127.0.0.1", port: 51155 },
    remote: { host: "127.0.0.1", port: 9 },
  });
  const exact = prep({
    network: "udp",
    local: { host: "127.0.0.1", port: 18443 },
    remote: { host: "127.0.0.1", port: 53 },
  });
  const m = new ProcNetMatcher("udp", [wild, exact], true);
  m.push(UDP.trimEnd());
  m.end();
  assertEquals(m.result(0)?.inode, "3655045");
  assertEquals(m.result(1)?.inode, "3653954");
  const m6 = new ProcNetMatcher("udp6", [
    prep({
      network: "udp",
      local: { host: "127.0.0.1", port: 51085 },
      remote: { host: "127.0.0.1", port: 9 },
    }),
  ], true);
  m6.push(UDP6);
  m6.end();
  assertEquals(m6.result(0)?.inode, "3665364", "IPv4 client on a dual-stack :: socket");
});

Deno.test("fd links, exe names, the fake", async () => {
  assertEquals(parseSocketLink("socket:[3665361]"), "3665361");
  assertEquals(parseSocketLink("pipe:[12]"), null);
  assertEquals(parseSocketLink("socket:[]"), null);
  assertEquals(parseSocketLink("/dev/null"), null);
  assertEquals(exeInfo("/usr/bin/curl"), { name: "curl", path: "/usr/bin/curl" });
  assertEquals(exeInfo("/tmp/a b/renamed (deleted)"), {
    name: "renamed",
    path: "/tmp/a b/renamed",
  });

  const q = queryFromAddrs(
    "tcp",
    { transport: "tcp", hostname: "::ffff:127.0.0.1", port: 5000 },
    { transport: "tcp", hostname: "127.0.0.1", port: 1080 },
  );
  assertEquals(q, {
    network: "tcp",
    local: { host: "::ffff:127.0.0.1", port: 5000 },
    remote: { host: "127.0.0.1", port: 1080 },
  });
  const fake = new FakeProcessResolver().set("tcp", { host: "127.0.0.1", port: 5000 }, {
    pid: 7,
    name: "curl",
  });
  assertEquals(await fake.lookup(q), { pid: 7, name: "curl" });
  assertEquals(await fake.lookup({ ...q, network: "udp" }), null);
  fake.set("tcp", { host: "127.0.0.1", port: 5000 }, null);
  assertEquals(await fake.lookup(q), null);
  assertEquals(fake.queries.length, 3);
});

/** A /proc look-alike: net tables, and per pid fd links, exe and comm. */
async function fakeProc(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "ostp-proc-" });
  await Deno.mkdir(`${root}/net`);
  // pid 100 is "us" (the accepted end), pid 200 the client, whose exe cannot be read.
  await Deno.writeTextFile(
    `${root}/net/tcp`,
    `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0438 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 776 1 0 100 0 0 10 0
   1: 0100007F:C350 0100007F:0438 06 00000000:00000000 03:00001000 00000000     0        0 0 3 0
   2: 0100007F:0438 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 778 1 0 20 0 0 10 -1
   3: 0100007F:C350 0100007F:0438 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0 20 0 0 10 -1
`,
  );
  await Deno.writeTextFile(
    `${root}/net/udp6`,
    `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 8910: 00000000000000000000000000000000:C78D 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 900 2 0 0
`,
  );
  await Deno.writeTextFile(`${root}/net/udp`, UDP.split("\n")[0] + "\n");
  const mk = async (pid: number, fds: Record<string, string>, exe?: string, comm?: string) => {
    await Deno.mkdir(`${root}/${pid}/fd`, { recursive: true });
    for (const [fd, target] of Object.entries(fds)) {
      await Deno.symlink(target, `${root}/${pid}/fd/${fd}`);
    }
    if (exe) await Deno.symlink(exe, `${root}/${pid}/exe`);
    if (comm) await Deno.writeTextFile(`${root}/${pid}/comm`, comm + "\n");
  };
  await mk(
    100,
    { "0": "/dev/null", "3": "socket:[776]", "4": "socket:[778]" },
    "/usr/bin/ostp-client",
  );
  await mk(200, { "0": "/dev/pts/1", "5": "socket:[777]" }, undefined, "renamed-fetche");
  await mk(250, { "7": "socket:[900]" }, "/tmp/x/renamed-fetcher-tool (deleted)");
  await Deno.mkdir(`${root}/300`); // no fd directory: exited, or not ours
  await Deno.symlink("100", `${root}/self`);
  return root;
}

Deno.test("LinuxProcessResolver over a fake /proc: owner, comm fallback, mapped, UDP, cache, batching", async () => {
  const root = await fakeProc();
  try {
    const r = new LinuxProcessResolver({ procRoot: root, littleEndian: true, timeoutMs: 10_000 });
    const q: ProcessQuery = {
      network: "tcp",
      local: { host: "127.0.0.1", port: 50000 },
      remote: { host: "127.0.0.1", port: 1080 },
    };
    assertEquals(await r.lookup(q), { pid: 200, name: "renamed-fetche" }, "comm, cut to 15 bytes");
    assertEquals(await r.lookup({ ...q, local: { host: "::ffff:127.0.0.1", port: 50000 } }), {
      pid: 200,
      name: "renamed-fetche",
    });
    assertEquals(r.stats.cacheHits, 1);
    // Our own accepted socket, asked the other way round, belongs to pid 100.
    assertEquals(
      await r.lookup({
        network: "tcp",
        local: { host: "127.0.0.1", port: 1080 },
        remote: { host: "127.0.0.1", port: 50000 },
      }),
      { pid: 100, name: "ostp-client", path: "/usr/bin/ostp-client" },
    );
    assertEquals(
      await r.lookup({
        network: "udp",
        local: { host: "127.0.0.1", port: 0xc78d },
        remote: { host: "127.0.0.1", port: 53 },
      }),
      { pid: 250, name: "renamed-fetcher-tool", path: "/tmp/x/renamed-fetcher-tool" },
      "IPv4 client on a dual-stack UDP socket, deleted executable",
    );
    assertEquals(await r.lookup({ ...q, local: { host: "127.0.0.1", port: 50001 } }), null);
    assertEquals(await r.lookup({ ...q, local: { host: "no-ip", port: 50000 } }), null);

    // Without the answer cache, the second lookup is an index hit (one readlink to verify).
    const nc = new LinuxProcessResolver({
      procRoot: root,
      littleEndian: true,
      cacheTtlMs: 0,
      timeoutMs: 10_000,
    });
    assertEquals((await nc.lookup(q))?.pid, 200);
    const before = nc.stats.pidsScanned;
    assertEquals((await nc.lookup(q))?.pid, 200);
    assertEquals(nc.stats.indexHits, 1);
    assertEquals(nc.stats.pidsScanned, before, "no /proc walk for a known inode");
    // A moved socket: the index entry fails verification and a walk finds the new owner.
    await Deno.remove(`${root}/200/fd/5`);
    await Deno.symlink("socket:[777]", `${root}/250/fd/8`);
    assertEquals((await nc.lookup(q))?.pid, 250);

    // Lookups issued together share one pass over each table.
    const b = new LinuxProcessResolver({ procRoot: root, littleEndian: true, timeoutMs: 10_000 });
    const answers = await Promise.all([
      b.lookup(q),
      b.lookup({
        network: "tcp",
        local: { host: "127.0.0.1", port: 1080 },
        remote: { host: "127.0.0.1", port: 50000 },
      }),
      b.lookup({
        network: "udp",
        local: { host: "127.0.0.1", port: 0xc78d },
        remote: { host: "127.0.0.1", port: 53 },
      }),
    ]);
    assertEquals(answers.map((a) => a?.pid), [250, 100, 250]);
    assertEquals(b.stats.passes, 1);
    assertEquals(b.stats.tableReads, 3, "tcp, udp, udp6 once each; tcp6 not needed");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** An in-memory `ProcFs`: file texts, directory listings, link targets; the rest is unreadable. */
function memoryProcFs(
  files: Record<string, string>,
  dirs: Record<string, string[]>,
  links: Record<string, string>,
): ProcFs {
  return {
    open(path) {
      const text = files[path];
      if (text === undefined) return Promise.resolve(null);
      let rest = new TextEncoder().encode(text);
      return Promise.resolve({
        read(buf: Uint8Array) {
          if (rest.length === 0) return Promise.resolve(null);
          const n = Math.min(buf.length, rest.length, 100); // small reads, like seq_file's pages
          buf.set(rest.subarray(0, n));
          rest = rest.subarray(n);
          return Promise.resolve(n);
        },
        close() {},
      });
    },
    readDir: (path) => dirs[path] ?? null,
    readLink: (path) => links[path] ?? null,
    readText: (path) => files[path] ?? null,
  };
}

Deno.test("LinuxProcessResolver over a ProcFs: unreadable processes skipped, /proc denied rejects", async () => {
  const fs = memoryProcFs(
    { "/p/net/tcp": TCP, "/p/31/comm": "bash\n" },
    { "/p": ["self", "7", "31", "30"], "/p/31/fd": ["0", "1", "2", "9"], "/p/30/fd": ["4"] },
    // pid 7's fd directory is unreadable (another user's process): readDir answers null
    { "/p/31/fd/9": "socket:[3665361]", "/p/31/fd/0": "/dev/null", "/p/30/fd/4": "socket:[1]" },
  );
  const r = new LinuxProcessResolver({ procRoot: "/p", fs, littleEndian: true, timeoutMs: 10_000 });
  const q: ProcessQuery = {
    network: "tcp",
    local: { host: "127.0.0.1", port: 48828 },
    remote: { host: "127.0.0.1", port: 35315 },
  };
  assertEquals(await r.lookup(q), { pid: 31, name: "bash" }, "no exe link: comm");
  assertEquals(r.stats.pidsScanned, 1, "highest PID first, stopping at the owner");
  assertEquals(r.stats.linksRead, 4);

  const denied: ProcFs = {
    ...fs,
    open: (path) => Promise.reject(new ProcAccessError(path)),
  };
  const d = new LinuxProcessResolver({ procRoot: "/p", fs: denied, timeoutMs: 10_000 });
  const e = await assertRejects(() => d.lookup(q), ProcAccessError);
  assert(e.message.includes("--allow-all"), e.message);
});
