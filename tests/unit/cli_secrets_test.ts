/**
 * Secrets off the command line: key, link and password files, `OSTP_KEY`,
 * `OSTP_LINK` and `OSTP_PASSWORD`, their precedence, their errors (which
 * name the file, never its content) and the warnings for a secret typed on
 * the command line or kept in a file other users can read.
 */

import { assert, assertEquals } from "../support/assert.ts";
import { formatAccessKey } from "../../shared/crypto/keys.ts";
import { encodeShareLink } from "../../shared/link.ts";
import { NO_KEY_MESSAGE, parseServerArgs, type ServerCliResult } from "../../server/cli.ts";
import { type ClientCliResult, parseClientArgs } from "../../client/cli.ts";
import { ConfigError } from "../../shared/config/types.ts";
import { loadClientConfig, parseClientConfig } from "../../shared/config/client_config.ts";
import { loadServerConfig, parseServerConfig } from "../../shared/config/server_config.ts";
import { type CliContext, secretLines, warnOnce } from "../../shared/config/secrets.ts";
import { programName, quietTaskHint } from "../../shared/program_name.ts";

const K1 = new Uint8Array(32).fill(1);
const K2 = new Uint8Array(32).fill(2);
const K3 = new Uint8Array(32).fill(3);
const K4 = new Uint8Array(32).fill(4);
const hex = (k: Uint8Array) => formatAccessKey(k, "hex");
const b64 = (k: Uint8Array) => formatAccessKey(k, "base64url");
const LINK1 = encodeShareLink({ key: K1, server: { host: "link.example", port: 1 }, name: "one" });
const LINK2 = encodeShareLink({ key: K2, server: { host: "env.example", port: 2 }, mux: 3 });

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes a private (0600) file and returns its path. */
async function secret(dir: string, name: string, text: string, mode = 0o600): Promise<string> {
  const path = `${dir}/${name}`;
  await Deno.writeTextFile(path, text, { mode });
  await Deno.chmod(path, mode);
  return path;
}

/** A context with the given environment, collecting warnings. */
function context(env: Record<string, string> = {}): CliContext & { warnings: string[] } {
  const warnings: string[] = [];
  return { env: (n) => env[n], warn: (l) => warnings.push(l), warnings };
}

function run<R extends ServerCliResult | ClientCliResult>(r: R): R & { kind: "run" } {
  if (r.kind !== "run") {
    throw new Error(`expected run, got ${r.kind}: ${"text" in r ? r.text : ""}`);
  }
  return r as R & { kind: "run" };
}

function errorText(r: ServerCliResult | ClientCliResult): string {
  if (r.kind !== "error") throw new Error(`expected an error, got ${r.kind}`);
  assert(r.text.startsWith("error: "), r.text);
  return r.text;
}

function includesAll(text: string, parts: string[]): void {
  for (const p of parts) assert(text.includes(p), `lacks ${JSON.stringify(p)}:\n${text}`);
}

// --- client: files -------------------------------------------------------------

Deno.test("client: --key-file and --link-file, comments and trailing newlines ignored", async () => {
  await withDir(async (dir) => {
    const keyFile = await secret(dir, "client.key", `# my key\n\n  ${b64(K2)}  \n\n`);
    const ctx = context();
    const r = run(await parseClientArgs(["-s", "vpn.example:443", "--key-file", keyFile], ctx));
    assertEquals(r.config.key, K2);
    assertEquals(r.config.server, { host: "vpn.example", port: 443 });
    assertEquals(ctx.warnings, [], "nothing on the command line, a private file");

    const linkFile = await secret(dir, "link.txt", `# from the operator\n${LINK1}\n`);
    const l = run(await parseClientArgs(["--link-file", linkFile], ctx));
    assertEquals(l.config.key, K1);
    assertEquals(l.config.server, { host: "link.example", port: 1 });
    assertEquals(l.name, "one");
    // A key flag still beats the link's key, as with a link argument.
    const lk = run(await parseClientArgs(["--link-file", linkFile, "--key-file", keyFile], ctx));
    assertEquals(lk.config.key, K2);
    assertEquals(lk.config.server, { host: "link.example", port: 1 });
    assertEquals(ctx.warnings, []);
  });
});

Deno.test("client: OSTP_LINK, OSTP_KEY; precedence config < env < command line", async () => {
  await withDir(async (dir) => {
    const c = await secret(dir, "c.json", `{"server": "file.example:9", "key": "${hex(K3)}"}`);
    const ctx = context({ OSTP_LINK: LINK2 });
    const env = run(await parseClientArgs([], ctx));
    assertEquals(env.config.server, { host: "env.example", port: 2 });
    assertEquals(env.config.key, K2);
    assertEquals(env.config.mux, 3);
    assertEquals(ctx.warnings, []);

    // env beats the config file
    const overFile = run(await parseClientArgs(["-c", c], context({ OSTP_LINK: LINK2 })));
    assertEquals(overFile.config.server, { host: "env.example", port: 2 });
    assertEquals(overFile.config.key, K2);
    const keyOverFile = run(await parseClientArgs(["-c", c], context({ OSTP_KEY: hex(K4) })));
    assertEquals(keyOverFile.config.server, { host: "file.example", port: 9 });
    assertEquals(keyOverFile.config.key, K4);

    // OSTP_KEY beats OSTP_LINK's key (as --key beats a link argument's)
    const both = run(await parseClientArgs([], context({ OSTP_LINK: LINK2, OSTP_KEY: hex(K4) })));
    assertEquals(both.config.key, K4);
    assertEquals(both.config.server, { host: "env.example", port: 2 });

    // the command line beats the environment; a bad OSTP_LINK is not even read then
    const cl = run(
      await parseClientArgs([LINK1], context({ OSTP_LINK: "garbage", OSTP_KEY: hex(K4) })),
    );
    assertEquals(cl.config.key, K1);
    assertEquals(cl.config.server, { host: "link.example", port: 1 });
    const flagKey = run(
      await parseClientArgs(["-s", "h:1", "-k", hex(K3)], context({ OSTP_KEY: hex(K4) })),
    );
    assertEquals(flagKey.config.key, K3);

    // OSTP_KEY with --server; an empty variable counts as unset
    const keyOnly = run(await parseClientArgs(["-s", "h:1"], context({ OSTP_KEY: b64(K4) })));
    assertEquals(keyOnly.config.key, K4);
    const empty = errorText(await parseClientArgs(["-s", "h:1"], context({ OSTP_KEY: "" })));
    assert(empty.includes("no access key: pass --key-file, OSTP_KEY"), empty);
  });
});

Deno.test("client: config keyFile and auth.passwordFile, relative to the config's directory", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/etc`);
    await secret(dir, "etc/client.key", `${hex(K3)}\n`);
    await secret(dir, "etc/proxy.pass", "s3cret pass\n");
    const c = await secret(
      dir,
      "etc/client.json",
      `{"server": "h:1", "keyFile": "client.key",
        "auth": {"username": "me", "passwordFile": "proxy.pass"}}`,
    );
    const ctx = context();
    const r = run(await parseClientArgs(["-c", c], ctx));
    assertEquals(r.config.key, K3);
    assertEquals(r.config.auth, { username: "me", password: "s3cret pass" });
    assertEquals((await loadClientConfig(c)).key, K3);
    const check = await parseClientArgs(["check", c], ctx);
    assertEquals(check.kind, "check");
    assertEquals(ctx.warnings, []);

    // A higher layer replaces the file's keyFile: the file is then not needed.
    await Deno.remove(`${dir}/etc/client.key`);
    const over = run(await parseClientArgs(["-c", c], context({ OSTP_KEY: hex(K4) })));
    assertEquals(over.config.key, K4);
    const gone = errorText(await parseClientArgs(["-c", c], context()));
    includesAll(gone, [c, "keyFile: cannot read", "etc/client.key: file not found"]);

    // key and keyFile together; parseClientConfig without the files read ahead
    const twice = await secret(
      dir,
      "t.json",
      `{"server": "h:1", "key": "${hex(K1)}", "keyFile": "k"}`,
    );
    includesAll(errorText(await parseClientArgs(["check", twice], context())), [
      "keyFile: give key or keyFile, not both",
    ]);
    try {
      parseClientConfig({ server: "h:1", keyFile: "x" });
      throw new Error("accepted");
    } catch (e) {
      assert(e instanceof ConfigError && e.message.includes("keyFile: the file was not read"));
    }
  });
});

Deno.test("client: both forms of one secret are an error", async () => {
  await withDir(async (dir) => {
    const f = await secret(dir, "k", hex(K1));
    includesAll(
      errorText(await parseClientArgs(["-s", "h:1", "-k", hex(K2), "--key-file", f], context())),
      ["--key-file: give --key-file or --key, not both"],
    );
    includesAll(errorText(await parseClientArgs([LINK1, "--link-file", f], context())), [
      "--link-file: give --link-file or a share link argument, not both",
    ]);
    includesAll(
      errorText(
        await parseClientArgs([
          LINK1,
          "--username",
          "u",
          "--password",
          "p",
          "--password-file",
          f,
        ], context()),
      ),
      ["--password-file: give --password-file or --password, not both"],
    );
  });
});

Deno.test("client: unreadable, empty or malformed files are errors that never echo content", async () => {
  await withDir(async (dir) => {
    const ctx = context();
    const missing = errorText(
      await parseClientArgs(["-s", "h:1", "--key-file", `${dir}/nope.key`], ctx),
    );
    includesAll(missing, [`--key-file: cannot read ${dir}/nope.key: file not found`]);
    assert(!missing.includes("no access key"), missing);
    const asDir = errorText(await parseClientArgs(["-s", "h:1", "--key-file", dir], ctx));
    includesAll(asDir, [`--key-file: cannot read ${dir}: is a directory`]);

    if (Deno.build.os === "linux") {
      includesAll(errorText(await parseClientArgs(["-s", "h:1", "--key-file", "/dev/zero"], ctx)), [
        "--key-file: /dev/zero is larger than 1048576 bytes",
      ]);
    }
    const latin1 = `${dir}/latin1`;
    await Deno.writeFile(latin1, new Uint8Array([0x70, 0xe4, 0x73, 0x73]), { mode: 0o600 });
    includesAll(
      errorText(await parseClientArgs([LINK1, "--username", "u", "--password-file", latin1], ctx)),
      [`--password-file: ${latin1} is not valid UTF-8`],
    );

    const empty = await secret(dir, "empty", "\n \n");
    includesAll(errorText(await parseClientArgs(["-s", "h:1", "--key-file", empty], ctx)), [
      `--key-file: ${empty} is empty`,
    ]);
    const comments = await secret(dir, "comments", "# nothing here\n");
    includesAll(errorText(await parseClientArgs(["--link-file", comments], ctx)), [
      `--link-file: ${comments} holds no share link`,
    ]);

    const badKey = "zz" + hex(K1).substring(2);
    const bad = await secret(dir, "bad", `${badKey}\n`);
    const badText = errorText(await parseClientArgs(["-s", "h:1", "--key-file", bad], ctx));
    includesAll(badText, ["--key-file: access key must be"]);
    assert(!badText.includes(badKey), "key echoed");
    const two = await secret(dir, "two", `${hex(K1)}\n${hex(K2)}\n`);
    const twoText = errorText(await parseClientArgs(["-s", "h:1", "--key-file", two], ctx));
    includesAll(twoText, [`--key-file: ${two} holds 2 lines; expected one access key`]);
    assert(!twoText.includes(hex(K1)) && !twoText.includes(hex(K2)), "key echoed");

    const brokenLink = `ostp://${b64(K1).substring(1)}@h:1`;
    const bl = await secret(dir, "bl", brokenLink);
    const blText = errorText(await parseClientArgs(["--link-file", bl], ctx));
    includesAll(blText, ["--link-file: invalid share link: invalid key"]);
    assert(!blText.includes(b64(K1).substring(1)) && !blText.includes("no server"), blText);
    const envText = errorText(await parseClientArgs([], context({ OSTP_LINK: brokenLink })));
    includesAll(envText, ["OSTP_LINK: invalid share link: invalid key"]);
    assert(!envText.includes(b64(K1).substring(1)), envText);
    const envKey = errorText(await parseClientArgs(["-s", "h:1"], context({ OSTP_KEY: badKey })));
    includesAll(envKey, ["OSTP_KEY: access key must be"]);
    assert(!envKey.includes(badKey), envKey);

    const pw = await secret(dir, "pw", "line one\nline two\n");
    const pwText = errorText(
      await parseClientArgs([LINK1, "--username", "u", "--password-file", pw], ctx),
    );
    includesAll(pwText, [`--password-file: ${pw} holds more than one line`]);
    assert(!pwText.includes("line one"), pwText);
    const long = await secret(dir, "long", "x".repeat(300));
    includesAll(
      errorText(await parseClientArgs([LINK1, "--username", "u", "--password-file", long], ctx)),
      ["--password-file: must be 1 to 255 bytes"],
    );
    assertEquals(ctx.warnings, [], "errors do not warn");
  });
});

Deno.test("client: proxy password from --password-file and OSTP_PASSWORD", async () => {
  await withDir(async (dir) => {
    const pw = await secret(dir, "pw", "correct horse\r\n");
    const ctx = context({ OSTP_LINK: LINK1 });
    const f = run(await parseClientArgs(["--username", "me", "--password-file", pw], ctx));
    assertEquals(f.config.auth, { username: "me", password: "correct horse" });
    const e = run(
      await parseClientArgs(
        ["--username", "me"],
        context({ OSTP_LINK: LINK1, OSTP_PASSWORD: "pp" }),
      ),
    );
    assertEquals(e.config.auth, { username: "me", password: "pp" });
    // the flag beats the environment; the environment beats the config file
    const c = await secret(
      dir,
      "c.json",
      `{"server": "h:1", "key": "${hex(K1)}", "auth": {"username": "fu", "password": "fp"}}`,
    );
    const over = run(
      await parseClientArgs(["-c", c, "--password-file", pw], context({ OSTP_PASSWORD: "pp" })),
    );
    assertEquals(over.config.auth, { username: "fu", password: "correct horse" });
    const envOver = run(await parseClientArgs(["-c", c], context({ OSTP_PASSWORD: "pp" })));
    assertEquals(envOver.config.auth, { username: "fu", password: "pp" });
    // a password needs a user name
    const alone = errorText(
      await parseClientArgs([], context({ OSTP_LINK: LINK1, OSTP_PASSWORD: "Tr0ub4dor&3" })),
    );
    includesAll(alone, ["OSTP_PASSWORD: needs --username too"]);
    assert(!alone.includes("Tr0ub4dor"), alone);
    includesAll(
      errorText(await parseClientArgs(["--username", "me"], context({ OSTP_LINK: LINK1 }))),
      [
        "--username: needs a password too (--password-file, OSTP_PASSWORD or --password)",
      ],
    );
    assertEquals(ctx.warnings, []);
  });
});

// --- client: warnings ------------------------------------------------------------

Deno.test("client: one warning for secrets typed on the command line, none for safe forms", async () => {
  const ctx = context();
  run(await parseClientArgs([LINK1, "--username", "u", "--password", "hunter2"], ctx));
  assertEquals(ctx.warnings.length, 1, ctx.warnings.join("\n"));
  const w = ctx.warnings[0];
  includesAll(w, [
    "warning: the share link and --password are on the command line",
    "(ps)",
    "--link-file <path> or OSTP_LINK",
    "--password-file <path> or OSTP_PASSWORD",
  ]);
  assert(!w.includes(b64(K1)) && !w.includes("hunter2"), "secret echoed");

  const k = context();
  run(await parseClientArgs(["-s", "h:1", "-k", hex(K1)], k));
  assertEquals(k.warnings.length, 1);
  includesAll(k.warnings[0], ["--key is on the command line", "--key-file <path> or OSTP_KEY"]);

  const safe = context({ OSTP_LINK: LINK1, OSTP_PASSWORD: "pp" });
  run(await parseClientArgs(["--username", "u"], safe));
  assertEquals(safe.warnings, []);
  // Nothing to warn about when the command line is refused anyway.
  const refused = context();
  errorText(await parseClientArgs([LINK1, "--mux", "99"], refused));
  assertEquals(refused.warnings, []);
});

Deno.test("client and server: a key file other users can read gets a chmod hint", async () => {
  if (Deno.build.os === "windows") return;
  await withDir(async (dir) => {
    const loose = await secret(dir, "loose.key", `${hex(K1)}\n`, 0o644);
    const ctx = context();
    run(await parseClientArgs(["-s", "h:1", "--key-file", loose], ctx));
    assertEquals(ctx.warnings, [
      `warning: ${loose} holds a secret and other users may read it (mode 0644); ` +
      `make it private with: chmod 600 ${loose}`,
    ]);
    const s = context();
    run(await parseServerArgs(["--key-file", loose], s));
    assertEquals(s.warnings.length, 1);
    includesAll(s.warnings[0], [loose, "mode 0644", `chmod 600 ${loose}`]);
    await Deno.chmod(loose, 0o640);
    const g = context();
    run(await parseServerArgs(["--key-file", loose], g));
    includesAll(g.warnings.join("\n"), ["mode 0640"]);
  });
});

Deno.test("warnOnce writes each distinct line to stderr once (reloads re-parse)", () => {
  const seen: unknown[] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => seen.push(a.join(" "));
  try {
    const line = `warning: test line ${crypto.randomUUID()}`;
    warnOnce(line);
    warnOnce(line);
    warnOnce(line + " other");
    assertEquals(seen, [line, line + " other"]);
  } finally {
    console.error = orig;
  }
});

// --- server --------------------------------------------------------------------

Deno.test("server: --key-file holds several keys; all key sources add up", async () => {
  await withDir(async (dir) => {
    const f1 = await secret(dir, "a.keys", `# team A\n${hex(K1)}\n\n  # old\n${b64(K2)}\n`);
    const f2 = await secret(dir, "b.keys", `${hex(K3)}`);
    const ctx = context();
    const one = run(await parseServerArgs(["--key-file", f1], ctx));
    assertEquals(one.config.keys, [K1, K2]);
    const all = run(
      await parseServerArgs(["--key-file", f1, "--key-file", f2, "-l", "127.0.0.1:0"], ctx),
    );
    assertEquals(all.config.keys, [K1, K2, K3]);
    assertEquals(ctx.warnings, []);

    const env = run(await parseServerArgs([], context({ OSTP_KEY: `${hex(K1)} ${b64(K4)}` })));
    assertEquals(env.config.keys, [K1, K4]);

    // config keys + config keyFiles (relative to the config) + OSTP_KEY + --key-file + --key
    await Deno.mkdir(`${dir}/etc`);
    await secret(dir, "etc/more.keys", `${hex(K2)}\n`);
    const c = await secret(
      dir,
      "etc/server.json",
      `{"keys": ["${hex(K1)}"], "keyFiles": ["more.keys"]}`,
    );
    const k5 = new Uint8Array(32).fill(5);
    const mixed = context({ OSTP_KEY: hex(K4) });
    const m = run(await parseServerArgs(["-c", c, "--key-file", f2, "-k", hex(k5)], mixed));
    assertEquals(new Set(m.config.keys.map(hex)), new Set([K1, K2, K3, K4, k5].map(hex)));
    assertEquals(m.config.keys.length, 5);
    assertEquals(m.config.keys[0], K1, "the config's keys come first");
    // only --key is a secret on the command line
    assertEquals(mixed.warnings.length, 1);
    includesAll(mixed.warnings[0], ["--key is on the command line", "--key-file <path>, OSTP_KEY"]);
    assert(!mixed.warnings[0].includes(hex(k5)), "key echoed");

    // check and links read the config's key files too
    const ck = await parseServerArgs(["check", c], context());
    assert(ck.kind === "check", "text" in ck ? ck.text : ck.kind);
    assertEquals(ck.config.keys, [K1, K2]);
    const links = await parseServerArgs(["links", c, "--public-address", "h:1"], context());
    assert(links.kind === "links");
    assertEquals(links.links.length, 2);
    assertEquals((await loadServerConfig(c)).keys, [K1, K2]);
  });
});

Deno.test("server: key file errors name the file and line, never the key", async () => {
  await withDir(async (dir) => {
    const badKey = "zz" + hex(K2).substring(2);
    const f = await secret(dir, "k", `${hex(K1)}\n# comment\n${badKey}\n${b64(K1)}\n`);
    const t = errorText(await parseServerArgs(["--key-file", f, "-k", hex(K3)], context()));
    includesAll(t, [
      `--key-file: ${f} line 3: access key must be`,
      `--key-file: ${f} line 4: duplicate of ${f} line 1`,
    ]);
    for (const k of [badKey, hex(K1), b64(K1), hex(K3)]) assert(!t.includes(k), `echoed:\n${t}`);

    const dup = errorText(
      await parseServerArgs(["--key-file", `${dir}/k2`, "-k", hex(K3)], context()),
    );
    includesAll(dup, [`--key-file: cannot read ${dir}/k2: file not found`]);
    const dupFlag = await secret(dir, "k3", hex(K3));
    includesAll(
      errorText(await parseServerArgs(["--key-file", dupFlag, "-k", hex(K3)], context())),
      [`--key-file: ${dupFlag} line 1: duplicate of keys[0]`],
    );

    const empty = await secret(dir, "empty", "");
    includesAll(errorText(await parseServerArgs(["--key-file", empty], context())), [
      `--key-file: ${empty} is empty`,
    ]);
    const comments = await secret(dir, "comments", "# keys go here\n\n");
    includesAll(errorText(await parseServerArgs(["--key-file", comments], context())), [
      `--key-file: ${comments} holds no access key`,
    ]);
    const envBad = errorText(await parseServerArgs([], context({ OSTP_KEY: badKey })));
    includesAll(envBad, ["OSTP_KEY: access key must be"]);
    assert(!envBad.includes(badKey), envBad);

    // the config's keyFiles: the field's path, relative to the config's directory
    const c = await secret(dir, "s.json", `{"keyFiles": ["missing.keys", 7]}`);
    includesAll(errorText(await parseServerArgs(["check", c], context())), [
      `keyFiles[0]: cannot read ${dir}/missing.keys: file not found`,
      "keyFiles[1]: expected a file path, got number",
    ]);
    try {
      parseServerConfig({ keyFiles: ["x"] });
      throw new Error("accepted");
    } catch (e) {
      assert(e instanceof ConfigError && e.message.includes("keyFiles[0]: the file was not read"));
    }
  });
});

Deno.test("server: no key from any source is an error with guidance", async () => {
  assertEquals(errorText(await parseServerArgs([], context())), `error: ${NO_KEY_MESSAGE}`);
  includesAll(NO_KEY_MESSAGE, ["--key-file", "OSTP_KEY", "genkey"]);
  assertEquals(
    errorText(await parseServerArgs([], context({ OSTP_KEY: "" }))),
    `error: ${NO_KEY_MESSAGE}`,
  );
});

Deno.test("secretLines skips blank lines and # comments, keeps line numbers", () => {
  assertEquals(secretLines("# a\r\n\n  k1 \n#b\nk2#x\n"), [
    { line: 3, text: "k1" },
    { line: 5, text: "k2#x" },
  ]);
});

// --- program names -------------------------------------------------------------

Deno.test("program names read right for deno task and for compiled binaries", async () => {
  assertEquals(programName("server", true), "ostp-server");
  assertEquals(programName("client", true), "ostp-client");
  assertEquals(programName("server", false), "deno task server");
  assertEquals(programName("client", false), "deno task client");
  assertEquals(quietTaskHint("server", true), "");
  assert(quietTaskHint("client", false).includes('"deno task -q client …"'));
  assertEquals(Deno.build.standalone, false, "tests run under deno test");
  const help = await parseServerArgs(["--help"], context());
  assert(help.kind === "help");
  includesAll(help.text, [
    "Usage: deno task server [options]",
    "deno task server <command> [args]",
    'Run "deno task server <command> --help"',
    '"deno task -q server …" keeps deno task from printing the command line',
  ]);
  assert(!help.text.includes("ostp-server"), help.text);
  const chelp = await parseClientArgs(["--help"], context());
  assert(chelp.kind === "help");
  includesAll(chelp.text, ["Usage: deno task client [options] [link]", "OSTP_LINK"]);
  assert(!chelp.text.includes("ostp-client"), chelp.text);
  await withDir(async (dir) => {
    // init names the program that checks that kind of config, whichever program wrote it
    const r = await parseClientArgs(["init", "server", `${dir}/s.jsonc`], context());
    assert(r.kind === "init");
    assert(r.text.includes(`validate it with: deno task server check ${dir}/s.jsonc`), r.text);
    const c = await parseServerArgs(["init", "client", `${dir}/c.jsonc`], context());
    assert(c.kind === "init");
    assert(c.text.includes(`validate it with: deno task client check ${dir}/c.jsonc`), c.text);
  });
});
