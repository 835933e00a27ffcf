/**
 * The local control socket: request parsing and answers, bounds (oversized
 * line, silent peer, connection cap), socket and directory modes, stale and
 * live sockets, the `control` config field and flags, the default path, and
 * the readable status rendering.
 */
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import {
  answerRequest,
  ControlCommandError,
  type ControlHandler,
  ControlServer,
  MAX_CONNECTIONS,
  MAX_REQUEST_BYTES,
} from "../../shared/control/server.ts";
import { ControlUnavailableError, queryControl } from "../../shared/control/query.ts";
import {
  ControlPathError,
  defaultControlPath,
  ensureSocketDir,
  resolveControlPath,
} from "../../shared/control/path.ts";
import { formatStatus } from "../../shared/control/status.ts";
import { parseServerConfig } from "../../shared/config/server_config.ts";
import { parseClientConfig } from "../../shared/config/client_config.ts";
import { ConfigError } from "../../shared/config/types.ts";
import { parseServerArgs } from "../../server/cli.ts";
import { parseClientArgs } from "../../client/cli.ts";

const KEY = "00".repeat(32);
/** No environment, warnings dropped. */
const QUIET = { warn: () => {}, env: () => undefined };

/** Size of the `big` answer: far more than a Unix socket buffers (about 200 KiB on Linux). */
const BIG = 4 * 1024 * 1024;

const commands: Record<string, ControlHandler> = {
  status: () => ({ stats: { sessions: 3 } }),
  refuse: () => {
    throw new ControlCommandError("not now");
  },
  crash: () => {
    throw new TypeError("boom");
  },
  /** An answer far bigger than a Unix socket's buffers: its write waits for the peer to read. */
  big: () => ({ blob: "x".repeat(BIG) }),
};

/** Runs `fn` with a fresh temporary directory, removed afterwards even on failure. */
async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ostp-ctl-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Opens a control server at `path`; fails the test if it does not open. */
async function open(path: string, timeoutMs?: number): Promise<ControlServer> {
  const s = await ControlServer.open(path, commands, { timeoutMs });
  if (!(s instanceof ControlServer)) throw new Error(`not opened: ${s.message}`);
  return s;
}

/** Sends raw bytes and returns everything the server wrote before closing. */
async function raw(path: string, bytes: Uint8Array, halfClose = false): Promise<string> {
  const c = await Deno.connect({ transport: "unix", path });
  try {
    for (let off = 0; off < bytes.length;) {
      try {
        off += await c.write(bytes.subarray(off));
      } catch {
        break; // the server closed while we were still writing
      }
    }
    if (halfClose) await c.closeWrite();
    const chunks: string[] = [];
    const buf = new Uint8Array(4096);
    const dec = new TextDecoder();
    while (true) {
      let n: number | null;
      try {
        n = await c.read(buf);
      } catch {
        break; // reset
      }
      if (n === null) break;
      chunks.push(dec.decode(buf.subarray(0, n)));
    }
    return chunks.join("");
  } finally {
    try {
      c.close();
    } catch {
      // closed
    }
  }
}

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("control: answerRequest handles good, malformed and failing requests", async () => {
  assertEquals(await answerRequest('{"cmd":"status"}', commands), {
    stats: { sessions: 3 },
    ok: true,
  });
  assertEquals(await answerRequest("{not json", commands), {
    ok: false,
    error: "request is not valid JSON",
  });
  for (const bad of ["[]", "42", "null", '"status"']) {
    const a = await answerRequest(bad, commands);
    assertEquals(a.ok, false, bad);
    assert(String(a.error).includes("JSON object"), `${bad}: ${a.error}`);
  }
  assertEquals((await answerRequest('{"cmd":7}', commands)).error, '"cmd" must be a string');
  const unknown = await answerRequest('{"cmd":"shutdown"}', commands);
  assertEquals(unknown.ok, false);
  assert(String(unknown.error).startsWith("unknown command (known: status"), String(unknown.error));
  assert(!String(unknown.error).includes("shutdown"), "the input is not echoed");
  // Prototype names are not commands.
  assertEquals((await answerRequest('{"cmd":"constructor"}', commands)).ok, false);
  assertEquals((await answerRequest('{"cmd":"__proto__"}', commands)).ok, false);
  assertEquals(await answerRequest('{"cmd":"refuse"}', commands), { ok: false, error: "not now" });
  assertEquals(await answerRequest('{"cmd":"crash"}', commands), {
    ok: false,
    error: "internal error",
  });
});

Deno.test("control: socket 0600 in a 0700 directory it creates; answers; removed on close", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/sub/server.sock`;
    const s = await open(path);
    try {
      assertEquals((await Deno.stat(`${dir}/sub`)).mode! & 0o777, 0o700);
      const st = await Deno.lstat(path);
      assert(st.isSocket, "a socket");
      assertEquals(st.mode! & 0o777, 0o600);
      assertEquals(await queryControl(path, { cmd: "status" }), {
        stats: { sessions: 3 },
        ok: true,
      });
      // A request ended by closing the write side instead of a newline is answered too.
      const halfClosed = await raw(path, enc('{"cmd":"status"}'), true);
      assertEquals(JSON.parse(halfClosed).ok, true);
    } finally {
      await s.close();
    }
    await assertRejects(() => Deno.lstat(path), Deno.errors.NotFound);
  });
});

Deno.test("control: bad input gets an error answer or a closed connection, never a crash", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/c.sock`;
    const s = await open(path, 300);
    try {
      const bad = JSON.parse(await raw(path, enc("garbage\n")));
      assertEquals(bad, { ok: false, error: "request is not valid JSON" });
      const unknown = JSON.parse(await raw(path, enc('{"cmd":"nope"}\n')));
      assertEquals(unknown.ok, false);
      // Oversized: a line longer than the bound, without a newline in it.
      const big = await raw(path, new Uint8Array(MAX_REQUEST_BYTES * 4).fill(0x61));
      assertEquals(JSON.parse(big), {
        ok: false,
        error: `request longer than ${MAX_REQUEST_BYTES} bytes`,
      });
      // Invalid UTF-8 and binary noise.
      const noise = JSON.parse(await raw(path, new Uint8Array([0xff, 0xfe, 0x00, 0x0a])));
      assertEquals(noise.ok, false);
      // A silent peer is disconnected after the timeout, without an answer.
      const t0 = performance.now();
      const c = await Deno.connect({ transport: "unix", path });
      const n = await c.read(new Uint8Array(16)).catch(() => null);
      c.close();
      assertEquals(n, null, "closed without an answer");
      const waited = performance.now() - t0;
      assert(waited >= 250 && waited < 3000, `closed after ${waited.toFixed(0)} ms`);
      // Only the first line counts.
      const two = await raw(path, enc('{"cmd":"status"}\n{"cmd":"refuse"}\n'));
      assertEquals(two.trim().split("\n").length, 1);
      assertEquals(JSON.parse(two).ok, true);
      // Still serving after all that.
      assertEquals((await queryControl(path, { cmd: "status" })).ok, true);
    } finally {
      await s.close();
    }
  });
});

Deno.test("control: peers that never read a big answer are closed after the timeout", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/c.sock`;
    const timeoutMs = 1000;
    const s = await open(path, timeoutMs);
    const stuck: Deno.Conn[] = [];
    try {
      // Every slot taken by a peer that asks for a big answer and never reads it.
      for (let i = 0; i < MAX_CONNECTIONS; i++) {
        const c = await Deno.connect({ transport: "unix", path });
        stuck.push(c);
        await c.write(enc('{"cmd":"big"}\n'));
      }
      await new Promise((r) => setTimeout(r, 100));
      // While they hold the slots, a 17th is turned away (closed without an answer)...
      assertEquals(await raw(path, enc('{"cmd":"status"}\n')), "", "the slots are taken");
      // ...and once the write timeout has passed, it is served.
      const t0 = performance.now();
      let answer = "";
      while (answer === "" && performance.now() - t0 < 4000) {
        answer = await raw(path, enc('{"cmd":"status"}\n'));
        if (answer === "") await new Promise((r) => setTimeout(r, 50));
      }
      const waited = performance.now() - t0;
      assertEquals(JSON.parse(answer), { stats: { sessions: 3 }, ok: true });
      assert(waited < timeoutMs + 2000, `served after ${waited.toFixed(0)} ms`);
      // The 17th got a slot only because stuck peers were cut off: they get part of their
      // answer, then the end. (A peer whose write started late may still drain it all in time.)
      let cut = 0;
      for (const c of stuck) {
        const buf = new Uint8Array(1 << 16);
        let got = 0;
        while (true) {
          const n = await c.read(buf).catch(() => null);
          if (n === null) break;
          got += n;
        }
        if (got < BIG) cut++;
      }
      assert(cut >= 1, "no stuck peer was cut off");
    } finally {
      for (const c of stuck) {
        try {
          c.close();
        } catch {
          // closed
        }
      }
      await s.close();
    }
  });
});

Deno.test("control: a stale socket is replaced, a live one is left alone", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/s.sock`;
    // A stale socket file: bound, then the listener dropped without removing it.
    const l = Deno.listen({ transport: "unix", path });
    const stale = `${dir}/stale.sock`;
    await Deno.rename(path, stale);
    l.close();
    await Deno.rename(stale, path);
    assert((await Deno.lstat(path)).isSocket, "stale socket file in place");
    await assertRejects(() => queryControl(path, { cmd: "status" }), ControlUnavailableError);
    const first = await open(path);
    try {
      assertEquals((await queryControl(path, { cmd: "status" })).ok, true);
      const second = await ControlServer.open(path, commands);
      assert(!(second instanceof ControlServer), "not opened over a live socket");
      assertEquals(second.reason, "busy");
      assertEquals((await queryControl(path, { cmd: "status" })).ok, true, "first still answers");
    } finally {
      await first.close();
    }
    // A path that is not a socket is never removed.
    await Deno.writeTextFile(path, "keep me");
    const notSocket = await ControlServer.open(path, commands);
    assert(!(notSocket instanceof ControlServer), "not opened over a regular file");
    assertEquals(notSocket.reason, "unusable");
    assertEquals(await Deno.readTextFile(path), "keep me");
  });
});

Deno.test("control: directories writable by others are refused", async () => {
  await withDir(async (dir) => {
    const open = `${dir}/open`;
    await Deno.mkdir(open);
    await Deno.chmod(open, 0o777);
    const e = await assertRejects(() => ensureSocketDir(open), ControlPathError);
    assert((e as Error).message.includes("writable by other users"), (e as Error).message);
    const sticky = `${dir}/sticky`;
    await Deno.mkdir(sticky);
    await Deno.chmod(sticky, 0o1777);
    assertEquals(await ensureSocketDir(sticky), false, "sticky like /tmp: accepted, not created");
    assertEquals(await ensureSocketDir(`${dir}/new`), true);
  });
});

Deno.test("control: queryControl without a daemon throws ControlUnavailableError", async () => {
  await withDir(async (dir) => {
    const e = await assertRejects(
      () => queryControl(`${dir}/none.sock`, { cmd: "status" }),
      ControlUnavailableError,
    );
    assert((e as Error).message.includes("no such socket"), (e as Error).message);
  });
});

Deno.test("control config: path or false, errors name the field", () => {
  const server = (control: unknown) => parseServerConfig({ keys: [KEY], control });
  const client = (control: unknown) =>
    parseClientConfig({ server: "127.0.0.1:1", key: KEY, control });
  assertEquals(server("/run/x.sock").control, "/run/x.sock");
  assertEquals(server(false).control, false);
  assertEquals(server(null).control, undefined);
  assertEquals(client("rel/c.sock").control, "rel/c.sock");
  assertEquals(client(false).control, false);
  assertEquals(
    parseClientConfig({ server: "127.0.0.1:1", key: KEY }).control,
    undefined,
  );
  for (const parse of [server, client]) {
    for (
      const [bad, message] of [
        [true, "expected a socket path or false, got boolean"],
        [5, "expected a socket path or false, got number"],
        ["", "expected a socket file path"],
        ["/run/dir/", "expected a socket file path"],
        ["/x/" + "a".repeat(120), "must be at most 103 bytes (got 123)"],
      ] as const
    ) {
      try {
        parse(bad);
        throw new Error(`accepted ${JSON.stringify(bad)}`);
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        assertEquals(e.issues, [{ path: "control", message }]);
      }
    }
  }
});

Deno.test("control flags: --control and --no-control on both daemons", async () => {
  const s = await parseServerArgs(["-k", KEY, "--control", "/tmp/x/s.sock"], QUIET);
  assert(s.kind === "run", JSON.stringify(s));
  assertEquals(s.config.control, "/tmp/x/s.sock");
  const off = await parseServerArgs(["-k", KEY, "--no-control"], QUIET);
  assert(off.kind === "run");
  assertEquals(off.config.control, false);
  const bad = await parseServerArgs(["-k", KEY, "--control", ""], QUIET);
  assert(bad.kind === "error", JSON.stringify(bad));
  assert(bad.text.includes("--control: expected a socket file path"), bad.text);
  const c = await parseClientArgs(
    ["--server", "127.0.0.1:1", "--key", KEY, "--control", "/tmp/x/c.sock"],
    QUIET,
  );
  assert(c.kind === "run", JSON.stringify(c));
  assertEquals(c.config.control, "/tmp/x/c.sock");
  const coff = await parseClientArgs(
    ["--server", "127.0.0.1:1", "--key", KEY, "--no-control"],
    QUIET,
  );
  assert(coff.kind === "run");
  assertEquals(coff.config.control, false);
});

Deno.test("control path: default under XDG_RUNTIME_DIR, else by user", () => {
  const saved = Deno.env.get("XDG_RUNTIME_DIR");
  try {
    Deno.env.set("XDG_RUNTIME_DIR", "/run/user/1234/");
    assertEquals(defaultControlPath("server"), "/run/user/1234/ostp/server.sock");
    assertEquals(defaultControlPath("client"), "/run/user/1234/ostp/client.sock");
    Deno.env.delete("XDG_RUNTIME_DIR");
    const expected = Deno.uid() === 0
      ? "/run/ostp/client.sock"
      : `${(Deno.env.get("TMPDIR") || "/tmp").replace(/\/+$/, "")}/ostp-${Deno.uid()}/client.sock`;
    assertEquals(defaultControlPath("client"), expected);
    assertEquals(resolveControlPath(false, "client"), null);
    assertEquals(resolveControlPath("/x.sock", "client"), "/x.sock");
  } finally {
    if (saved === undefined) Deno.env.delete("XDG_RUNTIME_DIR");
    else Deno.env.set("XDG_RUNTIME_DIR", saved);
  }
});

Deno.test("control status: readable rendering of stats, memory and users", () => {
  const text = formatStatus(
    {
      ok: true,
      stats: { sessions: 2, bytesSent: 3 * 1024 * 1024, rttMs: 12.34, drops: { rateLimited: 1 } },
      rssBytes: 50 * 1024 * 1024,
      users: [{ name: "alice", sessions: 1, bytesUp: 2048 }],
    },
    "ostp-server on /x.sock",
  );
  const lines = text.split("\n");
  assertEquals(lines[0], "ostp-server on /x.sock");
  assert(lines.includes("stats:"), text);
  assert(/^ {2}sessions +2$/m.test(text), text);
  assert(/^ {2}bytesSent +3145728 \(3\.0 MiB\)$/m.test(text), text);
  assert(/^ {2}rttMs +12\.3 ms$/m.test(text), text);
  assert(/^ {2}drops\.rateLimited +1$/m.test(text), text);
  assert(/^rssBytes +52428800 \(50\.0 MiB\)$/m.test(text), text);
  assert(lines.includes("users (1):"), text);
  assert(lines.includes("  alice: sessions 1, bytesUp 2048 (2.0 KiB)"), text);
  assert(!text.includes("ok"), "the ok flag is not shown");
});
