/**
 * `/proc` through libc (`ffi/procfs_linux.ts`) on the live system: directory listings (both the
 * getdents64 and the readdir64 path, over several buffers and non-ASCII names), links (also longer
 * than the first buffer), small files, streamed table reads, the errno contract (skipped as
 * `null` or thrown as `ProcFsError`), no leaked descriptors, parity with Deno's API, a live lookup
 * over it; and `selectProcFs`, which picks it when Deno may not read `/proc`.
 */

import { assert, assertEquals, assertRejects, assertThrows } from "../support/assert.ts";
import {
  defaultProcFsProbe,
  denoProcFs,
  LinuxProcessResolver,
  type ProcFs,
  type ProcFsProbe,
  selectProcFs,
} from "../../client/router/process_linux.ts";
import { queryFromAddrs } from "../../client/router/process.ts";
import {
  EINVAL,
  EISDIR,
  ENOTDIR,
  LibcProcFs,
  ProcFsError,
  SKIPPED_ERRNOS,
} from "../../ffi/procfs_linux.ts";

const LINUX = Deno.build.os === "linux";
if (!LINUX) console.log("SKIP procfs_linux_test: Linux only");

const MODES = [{ useReaddir: false }, { useReaddir: true }];

async function drain(fs: ProcFs, path: string, bufSize = 64 * 1024): Promise<string | null> {
  const f = await fs.open(path);
  if (!f) return null;
  const buf = new Uint8Array(bufSize);
  const dec = new TextDecoder();
  let text = "";
  try {
    for (;;) {
      const n = await f.read(buf);
      if (n === null) break;
      assert(n > 0 && n <= bufSize, `read size ${n}`);
      text += dec.decode(buf.subarray(0, n), { stream: true });
    }
  } finally {
    f.close();
  }
  return text + dec.decode();
}

/** Our open descriptors, as libc lists them (the listing's own descriptor included). */
function fdCount(fs: LibcProcFs): number {
  return fs.readDir("/proc/self/fd")!.length;
}

Deno.test({
  name: "LibcProcFs.readDir: /proc/self/fd and /proc, both listing paths",
  ignore: !LINUX,
  fn() {
    for (const mode of MODES) {
      const fs = new LibcProcFs(mode);
      assertEquals(fs.usesReaddir, mode.useReaddir);
      const fds = fs.readDir("/proc/self/fd");
      assert(fds, "listing /proc/self/fd");
      for (const n of ["0", "1", "2"]) assert(fds.includes(n), `${n} in ${fds}`);
      assert(!fds.includes(".") && !fds.includes(".."), "no dot entries");
      const pids = fs.readDir("/proc");
      assert(pids, "listing /proc");
      assert(pids.includes(String(Deno.pid)), "our PID is listed");
      assert(pids.includes("self") && pids.includes("net"), "self and net are listed");
    }
  },
});

Deno.test({
  name: "LibcProcFs.readDir: many long and non-ASCII names, same as Deno's listing",
  ignore: !LINUX,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ostp-procfs-dir-" });
    try {
      // 1 500 entries of ~230 bytes: about ten 32 KiB getdents64 buffers.
      const want = new Set<string>(["ünïcødé-файл-名前", "a", "with space"]);
      for (let i = 0; i < 1500; i++) want.add(`${String(i).padStart(4, "0")}-${"x".repeat(200)}`);
      for (const name of want) Deno.writeFileSync(`${dir}/${name}`, new Uint8Array());
      Deno.mkdirSync(`${dir}/sub`);
      want.add("sub");
      const deno = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
      assertEquals(deno, [...want].sort());
      for (const mode of MODES) {
        const got = new LibcProcFs(mode).readDir(dir);
        assert(got, "listing the temp dir");
        assertEquals(got.length, want.size, `no duplicates or losses (${JSON.stringify(mode)})`);
        assertEquals([...got].sort(), deno);
      }
      assertEquals(new LibcProcFs().readDir(`${dir}/sub`), []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "LibcProcFs.readLink: /proc/self/exe, fd links, a target longer than the first buffer",
  ignore: !LINUX,
  async fn() {
    const fs = new LibcProcFs();
    const exe = fs.readLink("/proc/self/exe");
    assert(exe !== null && exe.endsWith("deno"), `exe: ${exe}`);
    assertEquals(exe, Deno.execPath());
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const targets = fs.readDir("/proc/self/fd")!.map((fd) => fs.readLink(`/proc/self/fd/${fd}`));
      assert(targets.some((t) => t?.startsWith("socket:[")), `a socket link: ${targets}`);
    } finally {
      listener.close();
    }
    const dir = await Deno.makeTempDir({ prefix: "ostp-procfs-link-" });
    try {
      const long = "/nowhere/" + "segment-".repeat(375); // 3 009 bytes: grows the 1 KiB buffer
      Deno.symlinkSync(long, `${dir}/long`);
      Deno.symlinkSync("short", `${dir}/short`);
      assertEquals(fs.readLink(`${dir}/long`), long);
      assertEquals(
        fs.readLink(`${dir}/short`),
        "short",
        "the grown buffer still reads short links",
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "LibcProcFs.readText: comm, status, a file of several chunks, an empty file",
  ignore: !LINUX,
  async fn() {
    const fs = new LibcProcFs();
    assertEquals(fs.readText("/proc/self/comm"), Deno.readTextFileSync("/proc/self/comm"));
    const status = fs.readText("/proc/self/status");
    assert(status?.includes(`\nPid:\t${Deno.pid}\n`), "our own status");
    const dir = await Deno.makeTempDir({ prefix: "ostp-procfs-text-" });
    try {
      const big = "héllo wörld ✓ ".repeat(8000); // ~136 KB, multi-byte characters across chunks
      Deno.writeTextFileSync(`${dir}/big`, big);
      Deno.writeTextFileSync(`${dir}/empty`, "");
      assertEquals(fs.readText(`${dir}/big`), big);
      assertEquals(fs.readText(`${dir}/empty`), "");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "LibcProcFs.open: /proc/net/tcp streamed off-thread shows our listener; small buffers",
  ignore: !LINUX,
  async fn() {
    const fs = new LibcProcFs();
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const port = (listener.addr as Deno.NetAddr).port;
      const text = await drain(fs, "/proc/net/tcp");
      assert(text !== null && text.startsWith("  sl"), `header: ${text?.slice(0, 40)}`);
      const hex = port.toString(16).toUpperCase().padStart(4, "0");
      assert(text.includes(`0100007F:${hex} 00000000:0000 0A `), `listener row for port ${port}`);
    } finally {
      listener.close();
    }
    const dir = await Deno.makeTempDir({ prefix: "ostp-procfs-open-" });
    try {
      const body = Array.from({ length: 500 }, (_, i) => `line ${i}\n`).join("");
      Deno.writeTextFileSync(`${dir}/f`, body);
      assertEquals(await drain(fs, `${dir}/f`, 7), body);
      const f = await fs.open(`${dir}/f`);
      assert(f);
      const pending = f.read(new Uint8Array(8));
      assert(pending instanceof Promise);
      assertEquals(await pending, 8);
      f.close();
      await assertRejects(() => f.read(new Uint8Array(8)));
      f.close(); // twice is harmless
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "LibcProcFs: ENOENT, ESRCH (process exited) and EACCES answer null; other errno throw",
  ignore: !LINUX,
  async fn() {
    for (const mode of MODES) {
      const fs = new LibcProcFs(mode);
      assertEquals(await fs.open("/proc/net/no-such-table"), null);
      assertEquals(fs.readDir("/proc/999999999/fd"), null);
      assertEquals(fs.readLink("/proc/self/fd/987654"), null);
      assertEquals(fs.readText("/proc/999999999/comm"), null);
      assertEquals(fs.readText("/proc/self/comm\0x"), null, "a NUL in a path names nothing");

      const notDir = assertThrows(
        () => fs.readDir("/proc/self/status"),
        ProcFsError,
      ) as ProcFsError;
      assertEquals(notDir.code, ENOTDIR);
      assert(notDir.message.includes("/proc/self/status"), notDir.message);
      const isDir = assertThrows(() => fs.readText("/proc/self"), ProcFsError) as ProcFsError;
      assertEquals(isDir.code, EISDIR);
      const notLink = assertThrows(
        () => fs.readLink("/proc/self/status"),
        ProcFsError,
      ) as ProcFsError;
      assertEquals(notLink.code, EINVAL);
      assert(notLink.message.includes("readlink"), notLink.message);
      for (const c of [ENOTDIR, EISDIR, EINVAL]) assert(!SKIPPED_ERRNOS.has(c));
    }
    // A process that exited: its /proc entries answer null, through every method.
    const child = new Deno.Command(Deno.execPath(), { args: ["--version"], stdout: "null" })
      .spawn();
    const pid = child.pid;
    await child.status;
    const fs = new LibcProcFs();
    assertEquals(fs.readLink(`/proc/${pid}/exe`), null);
    assertEquals(fs.readDir(`/proc/${pid}/fd`), null);
    assertEquals(fs.readText(`/proc/${pid}/comm`), null);
    // A file opened while the process lived: reading it after the exit fails with ESRCH (errno
    // of the worker thread, learned by the synchronous retry), which reads as the end.
    const sleeper = new Deno.Command(Deno.execPath(), {
      args: ["eval", "await new Promise((r) => setTimeout(r, 30_000))"],
      stdout: "null",
    }).spawn();
    const stat = await fs.open(`/proc/${sleeper.pid}/stat`);
    assert(stat, "the live process's stat opens");
    sleeper.kill("SIGKILL");
    await sleeper.status;
    try {
      assertEquals(await stat.read(new Uint8Array(4096)), null);
    } finally {
      stat.close();
    }
    // EACCES: another user's process as non-root; as root, one Deno's API is denied too.
    if (Deno.uid() !== 0) assertEquals(fs.readDir("/proc/1/fd"), null);
    try {
      Deno.readLinkSync("/proc/1/exe");
    } catch (e) {
      if (e instanceof Deno.errors.PermissionDenied) assertEquals(fs.readLink("/proc/1/exe"), null);
    }
  },
});

Deno.test({
  name: "LibcProcFs: exe links agree with Deno's API for every process; no descriptor leaks",
  ignore: !LINUX,
  async fn() {
    const fs = new LibcProcFs();
    const before = fdCount(fs);
    let compared = 0;
    for (const name of fs.readDir("/proc")!) {
      if (!/^\d+$/.test(name)) continue;
      let deno: string | null;
      try {
        deno = Deno.readLinkSync(`/proc/${name}/exe`);
      } catch {
        deno = null; // e.g. PermissionDenied for a process outside our reach, even as root
      }
      const ours = fs.readLink(`/proc/${name}/exe`);
      if (ours !== deno && fs.readDir(`/proc/${name}`) === null) continue; // exited meanwhile
      assertEquals(ours, deno, `/proc/${name}/exe`);
      compared++;
    }
    assert(compared > 1, `compared ${compared} processes`);
    for (let i = 0; i < 50; i++) {
      fs.readText("/proc/self/stat");
      fs.readDir("/proc/self/fd");
      fs.readDir("/no/such/dir");
      assertThrows(() => fs.readDir("/proc/self/status"), ProcFsError);
      await drain(fs, "/proc/self/status");
    }
    const f = await fs.open("/proc/self/status");
    assert(f);
    assertEquals(fdCount(fs), before + 1, "an open file holds one descriptor");
    const inFlight = f.read(new Uint8Array(4096));
    f.close(); // while the read runs: the descriptor goes once it returns
    assert((await inFlight) !== null);
    assertEquals(fdCount(fs), before, "every descriptor was closed");
  },
});

Deno.test({
  name: "LinuxProcessResolver over LibcProcFs: names this process as a connection's owner",
  ignore: !LINUX,
  async fn() {
    const r = new LinuxProcessResolver({ fs: new LibcProcFs(), timeoutMs: 15_000 });
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const client = await Deno.connect({
      hostname: "127.0.0.1",
      port: (listener.addr as Deno.NetAddr).port,
    });
    const conn = await listener.accept();
    try {
      const info = await r.lookup(
        queryFromAddrs("tcp", conn.remoteAddr as Deno.NetAddr, conn.localAddr as Deno.NetAddr),
      );
      const exe = Deno.execPath();
      assertEquals(info, { pid: Deno.pid, name: exe.slice(exe.lastIndexOf("/") + 1), path: exe });
      assert(r.stats.linksRead > 0 && r.stats.tableReads >= 1, JSON.stringify(r.stats));
    } finally {
      conn.close();
      client.close();
      listener.close();
    }
  },
});

Deno.test("selectProcFs: FFI only when granted and Deno may not read /proc", async () => {
  const fake: ProcFs = { ...denoProcFs };
  const calls: string[] = [];
  const probe = (ffi: boolean, reads: boolean, load?: () => Promise<ProcFs>): ProcFsProbe => ({
    ffiGranted: () => (calls.push("ffi"), ffi),
    denoReads: (root) => (calls.push(`reads ${root}`), reads),
    loadFfi: () => (calls.push("load"), load ? load() : Promise.resolve(fake)),
  });
  assertEquals(await selectProcFs("/proc", probe(false, false)), denoProcFs);
  assertEquals(calls.splice(0), ["ffi"], "no FFI: Deno's API is not even probed");
  assertEquals(await selectProcFs("/proc", probe(true, true)), denoProcFs);
  assertEquals(calls.splice(0), ["ffi", "reads /proc"], "--allow-all: Deno's API");
  assertEquals(await selectProcFs("/p", probe(true, false)), fake);
  assertEquals(calls.splice(0), ["ffi", "reads /p", "load"]);
  const broken = probe(true, false, () => Promise.reject(new Error("no libc.so.6")));
  assertEquals(await selectProcFs("/proc", broken), denoProcFs, "libc missing: Deno's API");
});

Deno.test({
  name: "defaultProcFsProbe under --allow-all: FFI granted, Deno reads /proc, so denoProcFs",
  ignore: !LINUX,
  async fn() {
    assert(defaultProcFsProbe.ffiGranted());
    assert(defaultProcFsProbe.denoReads("/proc"));
    assert(defaultProcFsProbe.denoReads("/no/such/proc"), "missing is not Deno's guard");
    assertEquals(await selectProcFs(), denoProcFs);
    assert((await defaultProcFsProbe.loadFfi()) instanceof LibcProcFs);
  },
});
