/**
 * The CLI subcommands of both programs: init, check, genkey, links (with
 * --qr), their result kinds, and the exit codes of `server/main.ts`.
 */

import { assert, assertEquals } from "../support/assert.ts";
import { formatAccessKey, parseAccessKey } from "../../shared/crypto/keys.ts";
import { decodeShareLink } from "../../shared/link.ts";
import { terminalQr } from "../../shared/qr.ts";
import { parseServerArgs, type ServerCliResult } from "../../server/cli.ts";
import { type ClientCliResult, parseClientArgs } from "../../client/cli.ts";

const K1 = new Uint8Array(32).fill(1);
const K2 = new Uint8Array(32).fill(2);
const hex = (k: Uint8Array) => formatAccessKey(k, "hex");

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function expectKind<R extends ServerCliResult | ClientCliResult, K extends R["kind"]>(
  r: R,
  kind: K,
): R & { kind: K } {
  if (r.kind !== kind) {
    throw new Error(`expected ${kind}, got ${r.kind}: ${"text" in r ? r.text : ""}`);
  }
  return r as R & { kind: K };
}

// --- init + check ------------------------------------------------------------

Deno.test("init server writes a template that passes check; refuses to overwrite without --force", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/server.jsonc`;
    const init = expectKind(await parseServerArgs(["init", "server", path]), "init");
    assertEquals(init.path, path);
    const text = await Deno.readTextFile(path);
    for (const field of ["listen", "keys", "publicAddress", "maxSessions", "mtu", "log"]) {
      assert(text.includes(`"${field}"`), `template lacks ${field}`);
    }
    assert(text.includes("//"), "template has comments");
    if (Deno.build.os !== "windows") {
      assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600, "owner-only file");
    }
    const check = expectKind(await parseServerArgs(["check", path]), "check");
    assertEquals(check.text, "ok");
    assertEquals(check.config.keys.length, 1);

    await Deno.writeTextFile(path, "{}");
    const again = expectKind(await parseServerArgs(["init", "server", path]), "failure");
    assert(again.text.includes("--force"), again.text);
    assertEquals(await Deno.readTextFile(path), "{}", "file untouched");
    expectKind(await parseServerArgs(["init", "server", path, "--force"]), "init");
    expectKind(await parseServerArgs(["check", path]), "check");
  });
});

Deno.test("init without a path returns the template; client init/check via both programs", async () => {
  const s = expectKind(await parseServerArgs(["init", "server"]), "init");
  assertEquals(s.path, undefined);
  assert(s.text.startsWith("// ostp-server configuration"), s.text);
  const c = expectKind(await parseClientArgs(["init", "client"]), "init");
  assert(c.text.startsWith("// ostp-client configuration"), c.text);
  const sc = expectKind(await parseServerArgs(["init", "client"]), "init");
  assert(sc.text.startsWith("// ostp-client configuration"));
  expectKind(await parseServerArgs(["init", "router"]), "error");
  expectKind(await parseServerArgs(["init"]), "error");

  await withDir(async (dir) => {
    const path = `${dir}/client.jsonc`;
    expectKind(await parseClientArgs(["init", "client", path]), "init");
    expectKind(await parseClientArgs(["check", path]), "check");
    // A client config is not a server config, and the reverse.
    expectKind(await parseServerArgs(["check", path]), "error");
    const spath = `${dir}/server.jsonc`;
    expectKind(await parseClientArgs(["init", "server", spath]), "init");
    expectKind(await parseServerArgs(["check", spath]), "check");
    expectKind(await parseClientArgs(["check", spath]), "error");
  });
});

Deno.test("check lists field paths and never echoes a secret", async () => {
  await withDir(async (dir) => {
    const secret = hex(K1);
    const badKey = "zz" + secret.substring(2); // not hex, not base64url
    const path = `${dir}/bad.jsonc`;
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        keys: [secret, badKey, secret],
        listen: ["0.0.0.0:99999"],
        mtu: 10,
        bogus: secret,
      }),
    );
    const r = expectKind(await parseServerArgs(["check", path]), "error");
    for (const part of ["keys[1]", "keys[2]", "listen[0]", "mtu", "bogus", path]) {
      assert(r.text.includes(part), `lacks ${part}:\n${r.text}`);
    }
    assert(!r.text.includes(secret) && !r.text.includes(badKey), "secret echoed");
    assert(!r.text.includes(formatAccessKey(K1, "base64url")), "secret echoed");

    const cpath = `${dir}/client.jsonc`;
    await Deno.writeTextFile(
      cpath,
      JSON.stringify({ server: "vpn.example.com:8443", key: badKey, auth: { username: "u" } }),
    );
    const c = expectKind(await parseClientArgs(["check", cpath]), "error");
    for (const part of ["key", "auth.password"]) assert(c.text.includes(part), c.text);
    assert(!c.text.includes(badKey), "secret echoed");

    const missing = expectKind(await parseServerArgs(["check", `${dir}/nope.jsonc`]), "error");
    assert(missing.text.includes("file not found"), missing.text);
    expectKind(await parseServerArgs(["check"]), "error");
  });
});

// --- genkey ------------------------------------------------------------------

Deno.test("genkey: --count and --format give valid, distinct keys", async () => {
  const one = expectKind(await parseServerArgs(["genkey"]), "genkey");
  assertEquals(one.keys.length, 1);
  assert(/^[0-9a-f]{64}$/.test(one.text), one.text);

  const hexes = expectKind(await parseServerArgs(["genkey", "--count", "5"]), "genkey");
  const lines = hexes.text.split("\n");
  assertEquals(lines.length, 5);
  assertEquals(new Set(lines).size, 5, "distinct");
  lines.forEach((l, i) => {
    assert(/^[0-9a-f]{64}$/.test(l), l);
    assertEquals(parseAccessKey(l), hexes.keys[i]);
  });

  const b64 = expectKind(
    await parseServerArgs(["genkey", "--count", "3", "--format", "base64url"]),
    "genkey",
  );
  const blines = b64.text.split("\n");
  assertEquals(blines.length, 3);
  blines.forEach((l, i) => {
    assert(/^[A-Za-z0-9_-]{43}$/.test(l), l);
    assertEquals(parseAccessKey(l), b64.keys[i]);
  });

  for (
    const bad of [["--count", "0"], ["--count", "x"], ["--count", "1001"], ["--format", "b64"]]
  ) {
    expectKind(await parseServerArgs(["genkey", ...bad]), "error");
  }
  // The old flag still works.
  expectKind(await parseServerArgs(["--generate-key"]), "generate-key");
});

// --- links -------------------------------------------------------------------

async function twoKeyConfig(dir: string, extra: Record<string, unknown> = {}): Promise<string> {
  const path = `${dir}/server.jsonc`;
  await Deno.writeTextFile(
    path,
    JSON.stringify({ listen: ["0.0.0.0:8443"], keys: [hex(K1), hex(K2)], mtu: 1280, ...extra }),
  );
  return path;
}

Deno.test("links: one link per key, decoding back to the keys; wildcard listen warns", async () => {
  await withDir(async (dir) => {
    const path = await twoKeyConfig(dir);
    const r = expectKind(await parseServerArgs(["links", path]), "links");
    assertEquals(r.links.length, 2);
    assertEquals(r.text.split("\n"), r.links);
    const decoded = r.links.map(decodeShareLink);
    assertEquals(decoded.map((l) => l.key), [K1, K2]);
    for (const l of decoded) {
      assertEquals(l.server, { host: "127.0.0.1", port: 8443 });
      assertEquals(l.mtu, 1280);
    }
    assert(r.warning?.includes("--public-address"), r.warning);

    const pub = expectKind(
      await parseServerArgs(["links", path, "--public-address", "vpn.example.com:443"]),
      "links",
    );
    assertEquals(pub.warning, undefined);
    for (const l of pub.links.map(decodeShareLink)) {
      assertEquals(l.server, { host: "vpn.example.com", port: 443 });
    }
    expectKind(await parseServerArgs(["links", path, "--public-address", "0.0.0.0:443"]), "error");
    expectKind(await parseServerArgs(["links", path, "--public-address", "nope"]), "error");
  });
  await withDir(async (dir) => {
    const path = await twoKeyConfig(dir, { publicAddress: "[2001:db8::1]:8443" });
    const r = expectKind(await parseServerArgs(["links", path]), "links");
    assertEquals(r.warning, undefined);
    assertEquals(decodeShareLink(r.links[0]).server, { host: "2001:db8::1", port: 8443 });
  });
});

Deno.test("links --qr: a QR code per link, non-trivial and deterministic", async () => {
  await withDir(async (dir) => {
    const path = await twoKeyConfig(dir);
    const r = expectKind(await parseServerArgs(["links", path, "--qr"]), "links");
    const qr0 = await terminalQr(r.links[0]);
    const qr1 = await terminalQr(r.links[1]);
    assertEquals(r.text, [r.links[0], qr0, r.links[1], qr1].join("\n"));
    assert(qr0 !== qr1, "different links, different codes");

    const again = await terminalQr(r.links[0]);
    assertEquals(again, qr0, "deterministic");
    const lines = qr0.split("\n");
    assert(lines.length >= 15, `only ${lines.length} lines`);
    const blocks = [...qr0].filter((c) => c === "█" || c === "▀" || c === "▄").length;
    assert(blocks > 200, `only ${blocks} block characters`);
    // A wider code for a longer text; the link itself is not printed inside the code.
    assert(!qr0.includes("ostp://"));
    assert((await terminalQr(r.links[0] + "#" + "x".repeat(100))).length > qr0.length);
  });
});

// --- subprocess: exit codes ---------------------------------------------------

async function runMain(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const main = new URL("../../server/main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("server/main.ts: genkey and check exit codes", async () => {
  const g = await runMain(["genkey", "--count", "2"]);
  assertEquals(g.code, 0, g.stderr);
  const keys = g.stdout.trim().split("\n");
  assertEquals(keys.length, 2);
  keys.forEach((k) => parseAccessKey(k));

  await withDir(async (dir) => {
    const good = `${dir}/good.jsonc`;
    assertEquals((await runMain(["init", "server", good])).code, 0);
    assertEquals((await runMain(["init", "server", good])).code, 1, "exists: runtime error");
    const ok = await runMain(["check", good]);
    assertEquals(ok.code, 0, ok.stderr);
    assertEquals(ok.stdout.trim(), "ok");

    const bad = `${dir}/bad.jsonc`;
    await Deno.writeTextFile(bad, JSON.stringify({ keys: [hex(K1)], mtu: 1 }));
    const ko = await runMain(["check", bad]);
    assertEquals(ko.code, 2);
    assert(ko.stderr.includes("mtu"), ko.stderr);
    assert(!ko.stderr.includes(hex(K1)) && !ko.stdout.includes(hex(K1)), "secret echoed");
  });
});

Deno.test("links: named users get links carrying their names", async () => {
  await withDir(async (dir) => {
    const K3 = crypto.getRandomValues(new Uint8Array(32));
    const path = await twoKeyConfig(dir, { users: [{ name: "alice", key: hex(K3) }] });
    const r = expectKind(await parseServerArgs(["links", path]), "links");
    assertEquals(r.links.length, 3);
    const alice = decodeShareLink(r.links[2]);
    assertEquals(alice.key, K3);
    assertEquals(alice.name, "alice");
  });
});
