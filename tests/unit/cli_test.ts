import { assert, assertEquals } from "../support/assert.ts";
import { formatAccessKey, parseAccessKey } from "../../shared/crypto/keys.ts";
import { encodeShareLink } from "../../shared/link.ts";
import { NO_KEY_MESSAGE, parseServerArgs, type ServerCliResult } from "../../server/cli.ts";
import { type ClientCliResult, parseClientArgs } from "../../client/cli.ts";
import { programName } from "../../shared/program_name.ts";

const K1 = new Uint8Array(32).fill(1);
const K2 = new Uint8Array(32).fill(2);
const K3 = new Uint8Array(32).fill(3);
const hex = (k: Uint8Array) => formatAccessKey(k, "hex");

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function runServer(r: ServerCliResult) {
  if (r.kind !== "run") throw new Error(`expected run, got ${r.kind}: ${r.text}`);
  return r.config;
}

function runClient(r: ClientCliResult) {
  if (r.kind !== "run") throw new Error(`expected run, got ${r.kind}: ${r.text}`);
  return r;
}

function errorText(r: ServerCliResult | ClientCliResult): string {
  if (r.kind !== "error") throw new Error(`expected an error, got ${r.kind}`);
  assert(r.text.startsWith("error: "), r.text);
  return r.text;
}

// --- server ----------------------------------------------------------------

Deno.test("server cli: help and version are returned, not printed, and do not exit", async () => {
  const help = await parseServerArgs(["--help"]);
  assertEquals(help.kind, "help");
  assert(
    "text" in help && help.text.includes(`Usage: ${programName("server")} [options]`) &&
      help.text.includes("--help-all") && help.text.includes("--key-file <path>") &&
      help.text.split("\n").length <= 50,
    "text" in help ? help.text : help.kind,
  );
  const all = await parseServerArgs(["--help-all"]);
  assert(
    "text" in all && all.text.includes("--generate-key") && all.text.includes("--udp-upstream"),
  );
  assertEquals((await parseServerArgs(["-h"])).kind, "help");
  const v = await parseServerArgs(["--version"]);
  assertEquals(v.kind, "version");
  assert("text" in v && / \d+\.\d+\.\d+ \(commit /.test(v.text), JSON.stringify(v));
  // Still running: a second parse works and nothing exited.
  assertEquals((await parseServerArgs(["-V"])).kind, "version");
});

Deno.test("server cli: --generate-key prints a fresh key in hex or base64url", async () => {
  const a = await parseServerArgs(["--generate-key"]);
  const b = await parseServerArgs(["--generate-key", "base64url"]);
  const c = await parseServerArgs(["--generate-key", "hex"]);
  assertEquals(a.kind, "generate-key");
  assertEquals(b.kind, "generate-key");
  const ta = (a as { text: string }).text;
  const tb = (b as { text: string }).text;
  assert(/^[0-9a-f]{64}$/.test(ta), ta);
  assert(/^[A-Za-z0-9_-]{43}$/.test(tb), tb);
  assertEquals(parseAccessKey(tb).length, 32);
  assert(ta !== (c as { text: string }).text, "fresh each time");
  assert(errorText(await parseServerArgs(["--generate-key", "pem"])).includes("--generate-key"));
});

Deno.test("server cli: no key anywhere is an error with guidance", async () => {
  assertEquals(errorText(await parseServerArgs([])), `error: ${NO_KEY_MESSAGE}`);
  assertEquals(errorText(await parseServerArgs(["-l", "0.0.0.0:1"])), `error: ${NO_KEY_MESSAGE}`);
});

Deno.test("server cli: flags alone; repeatable --listen and --key", async () => {
  const cfg = runServer(
    await parseServerArgs([
      "-k",
      hex(K1),
      "--key",
      formatAccessKey(K2, "base64url"),
      "-l",
      "[::]:443",
      "--listen",
      "127.0.0.1:8443",
      "--public-address",
      "vpn.example.com:443",
      "--max-sessions",
      "5",
      "--idle-timeout",
      "1.5",
      "--log-level",
      "debug",
      "--log-format",
      "json",
    ]),
  );
  assertEquals(cfg.keys, [K1, K2]);
  assertEquals(cfg.listen, [{ host: "::", port: 443 }, { host: "127.0.0.1", port: 8443 }]);
  assertEquals(cfg.publicAddress, { host: "vpn.example.com", port: 443 });
  assertEquals(cfg.maxSessions, 5);
  assertEquals(cfg.idleTimeout, 1.5);
  assertEquals(cfg.log, { level: "debug", format: "json" });
  assertEquals(cfg.mtu, 1350);
});

Deno.test("server cli: defaults < file < flags; --listen replaces, --key adds", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/server.json`;
    await Deno.writeTextFile(
      path,
      `{
        // file values
        "keys": ["${hex(K1)}", "${hex(K2)}"],
        "listen": ["0.0.0.0:1", "0.0.0.0:2"],
        "maxSessions": 7,
        "mtu": 1400,
        "log": { "level": "warning", "format": "json" },
      }`,
    );
    const fromFile = await parseServerArgs(["-c", path]);
    assert(fromFile.kind === "run");
    assertEquals(fromFile.configPath, path);
    assertEquals(fromFile.config.maxSessions, 7);
    assertEquals(fromFile.config.listen.length, 2);

    const cfg = runServer(
      await parseServerArgs([
        "--config",
        path,
        "-l",
        "[::1]:3",
        "-k",
        hex(K3),
        "--max-sessions",
        "9",
        "--log-level",
        "error",
      ]),
    );
    assertEquals(cfg.listen, [{ host: "::1", port: 3 }]);
    assertEquals(cfg.keys, [K1, K2, K3]);
    assertEquals(cfg.maxSessions, 9);
    assertEquals(cfg.mtu, 1400); // from the file
    assertEquals(cfg.log, { level: "error", format: "json" }); // format kept from the file
    assertEquals(cfg.handshakeRate, 200); // default
  });
});

Deno.test("server cli: errors name the flag or the field, and never echo keys", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/server.json`;
    await Deno.writeTextFile(path, `{"keys": ["${hex(K1)}"], "mtu": 10, "bogus": 1}`);
    const badKey = hex(K2).substring(0, 63);
    const text = errorText(
      await parseServerArgs([
        "-c",
        path,
        "-k",
        badKey,
        "-k",
        hex(K1),
        "-l",
        "nope",
        "--max-sessions",
        "lots",
        "--idle-timeout",
        "0",
        "--public-address",
        "::1:5",
      ]),
    );
    assert(text.includes(path), text);
    for (
      const part of [
        "--max-sessions: expected a number",
        "--key: access key must be",
        "--key: duplicate of keys[0]",
        '--listen: expected "host:port"',
        "--idle-timeout: must be from 1",
        "--public-address: an IPv6 address needs brackets",
        "mtu: must be from 576",
        "bogus: unknown field",
      ]
    ) assert(text.includes(part), `lacks ${JSON.stringify(part)}:\n${text}`);
    assert(!text.includes(badKey) && !text.includes(hex(K1)), "key echoed");
  });
  const missing = errorText(await parseServerArgs(["-c", "/nonexistent/ostp.json"]));
  assert(missing.includes("/nonexistent/ostp.json") && missing.includes("file not found"));
  const unknown = errorText(await parseServerArgs(["--lissen", "x"]));
  assert(unknown.includes("unknown option '--lissen'"), unknown);
  assert(errorText(await parseServerArgs(["--log-level", "loud", "-k", hex(K1)])).includes("loud"));
  assert(errorText(await parseServerArgs(["-k"])).includes("argument missing"));
  assert(errorText(await parseServerArgs(["extra", "-k", hex(K1)])).includes("too many arguments"));
});

Deno.test("server cli: --egress-allow and --egress-deny repeat and add to the file's lists", async () => {
  const entries = (list: { prefix: { bits: number }; ports: unknown }[]) =>
    list.map((e) => [e.prefix.bits, e.ports]);
  const file = (egress: unknown) => JSON.stringify({ keys: [hex(K1)], egress });
  // Flags alone.
  const alone = runServer(
    await parseServerArgs([
      "-k",
      hex(K1),
      "--egress-allow",
      "127.0.0.1:8080",
      "--egress-allow",
      "[::1]:8000-8100",
      "--egress-deny",
      "0.0.0.0/0:25",
    ]),
  );
  const [local, v6] = entries(alone.egress.allow);
  assertEquals(local, [128, { lo: 8080, hi: 8080 }]);
  assertEquals(v6, [128, { lo: 8000, hi: 8100 }]);
  assertEquals(entries(alone.egress.deny), [[96, { lo: 25, hi: 25 }]]);
  // Without flags or a file: both empty.
  const none = runServer(await parseServerArgs(["-k", hex(K1)]));
  assertEquals(none.egress, { allow: [], deny: [] });
  await withDir(async (dir) => {
    const path = `${dir}/server.json`;
    await Deno.writeTextFile(path, file({ allow: ["10.91.2.0/24"], deny: ["10.0.0.0/8:22"] }));
    const cfg = runServer(
      await parseServerArgs([
        "-c",
        path,
        "--egress-allow",
        "127.0.0.0/8",
        "--egress-deny",
        "[::]/0:25",
      ]),
    );
    assertEquals(entries(cfg.egress.allow), [[96 + 24, null], [96 + 8, null]]);
    assertEquals(entries(cfg.egress.deny), [[96 + 8, { lo: 22, hi: 22 }], [0, { lo: 25, hi: 25 }]]);
    // A file with only one list gets the other from the flags.
    await Deno.writeTextFile(path, file({ deny: ["0.0.0.0/0:25"] }));
    const one = runServer(await parseServerArgs(["-c", path, "--egress-allow", "127.0.0.1"]));
    assertEquals([one.egress.allow.length, one.egress.deny.length], [1, 1]);
    // Errors name the flag (and which one, when it repeats) or the file's entry; never the text.
    await Deno.writeTextFile(path, file({ allow: ["10.1.2.3/8"] }));
    const text = errorText(
      await parseServerArgs([
        "-c",
        path,
        "--egress-allow",
        "127.0.0.1",
        "--egress-allow",
        "private-name.example",
        "--egress-deny",
        "10.0.0.0/8:0",
      ]),
    );
    for (
      const part of [
        "egress.allow[0]: host bits are set past /8",
        "--egress-allow #2: ",
        "--egress-deny: ports must be 1..65535",
      ]
    ) assert(text.includes(part), `lacks ${JSON.stringify(part)}:\n${text}`);
    assert(!text.includes("--egress-allow #1"), text);
    assert(!text.includes("private-name"), "an entry is never echoed");
  });
});

// --- client ----------------------------------------------------------------

const LINK = encodeShareLink({
  key: K1,
  server: { host: "2001:db8::1", port: 8443 },
  mtu: 1280,
  mux: 2,
  name: "Home server",
});

Deno.test("client cli: help fits on a screen, --help-all lists every option; version does not exit", async () => {
  const h = await parseClientArgs(["--help"]);
  assert(h.kind === "help" && h.text.includes(`Usage: ${programName("client")} [options] [link]`));
  for (const part of ["--key-file <path>", "--link-file <path>", "--help-all"]) {
    assert(h.text.includes(part), `lacks ${part}:\n${h.text}`);
  }
  assert(h.text.split("\n").length <= 50, `--help is ${h.text.split("\n").length} lines`);
  const all = await parseClientArgs(["--help-all"]);
  assert(all.kind === "help");
  for (const part of ["--password-file <path>", "--heartbeat-interval", "--stun <host:port>"]) {
    assert(all.text.includes(part), `--help-all lacks ${part}`);
  }
  assertEquals((await parseClientArgs(["-V"])).kind, "version");
});

Deno.test("client cli: a share link is all a client needs", async () => {
  const r = runClient(await parseClientArgs([LINK]));
  assertEquals(r.config.server, { host: "2001:db8::1", port: 8443 });
  assertEquals(r.config.key, K1);
  assertEquals(r.config.mtu, 1280);
  assertEquals(r.config.mux, 2);
  assertEquals(r.config.listen, { host: "127.0.0.1", port: 1088 });
  assertEquals(r.name, "Home server");
  assertEquals(r.configPath, undefined);
});

Deno.test("client cli: flags alone", async () => {
  const r = runClient(
    await parseClientArgs([
      "-s",
      "vpn.example.com:443",
      "-k",
      hex(K2),
      "-l",
      "[::1]:1080",
      "--mux",
      "4",
      "--username",
      "me",
      "--password",
      "pw",
      "--log-level",
      "trace",
      "--log-format",
      "json",
    ]),
  );
  assertEquals(r.config.server, { host: "vpn.example.com", port: 443 });
  assertEquals(r.config.key, K2);
  assertEquals(r.config.listen, { host: "::1", port: 1080 });
  assertEquals(r.config.mux, 4);
  assertEquals(r.config.auth, { username: "me", password: "pw" });
  assertEquals(r.config.log, { level: "trace", format: "json" });
});

Deno.test("client cli: precedence defaults < file < link < flags", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/client.json`;
    await Deno.writeTextFile(
      path,
      `{
        "server": "file.example:1", "key": "${hex(K3)}",
        "listen": "127.0.0.1:2000", "mux": 8, "mtu": 1500, "keepalive": 5,
        "auth": { "username": "fileuser", "password": "filepass" },
      }`,
    );
    const file = runClient(await parseClientArgs(["-c", path]));
    assertEquals(file.config.server, { host: "file.example", port: 1 });
    assertEquals(file.config.mux, 8);
    assertEquals(file.configPath, path);

    const link = runClient(await parseClientArgs(["-c", path, LINK]));
    assertEquals(link.config.server, { host: "2001:db8::1", port: 8443 }); // link beats file
    assertEquals(link.config.key, K1);
    assertEquals(link.config.mux, 2);
    assertEquals(link.config.mtu, 1280);
    assertEquals(link.config.listen, { host: "127.0.0.1", port: 2000 }); // file (link has none)
    assertEquals(link.config.keepalive, 5); // file
    assertEquals(link.config.idleTimeout, 30); // default

    const flags = runClient(
      await parseClientArgs([
        LINK,
        "-c",
        path,
        "--mux",
        "3",
        "-s",
        "flag.example:9",
        "--password",
        "p2",
      ]),
    );
    assertEquals(flags.config.mux, 3); // flag beats link
    assertEquals(flags.config.server, { host: "flag.example", port: 9 });
    assertEquals(flags.config.key, K1); // link
    assertEquals(flags.config.auth, { username: "fileuser", password: "p2" }); // merged per field
  });
});

Deno.test("client cli: errors name the flag, the link or the field", async () => {
  const none = errorText(await parseClientArgs([]));
  assert(none.includes("no server: pass an ostp:// share link (OSTP_LINK"), none);
  assert(none.includes("no access key"), none);

  const badLink = errorText(await parseClientArgs(["https://example.com"]));
  assert(badLink.includes("invalid share link: must start with ostp://"), badLink);

  const keyText = formatAccessKey(K1, "base64url");
  const brokenKey = keyText.substring(1);
  const linkErr = errorText(await parseClientArgs([`ostp://${brokenKey}@h:1`]));
  assert(linkErr.includes("invalid share link: invalid key"), linkErr);
  assert(!linkErr.includes(brokenKey));

  const flags = errorText(
    await parseClientArgs([
      LINK,
      "--mux",
      "99",
      "-l",
      "localhost",
      "-k",
      "not-a-key",
      "--username",
      "u".repeat(300),
    ]),
  );
  for (
    const part of [
      "--mux: must be from 1 to 16",
      '--listen: expected "host:port"',
      "--key: access key must be",
      "--username: needs a password too",
      "--username: must be 1 to 255 bytes",
    ]
  ) assert(flags.includes(part), `lacks ${JSON.stringify(part)}:\n${flags}`);
  assert(
    errorText(await parseClientArgs([LINK, "--mux", "two"])).includes("--mux: expected an integer"),
  );
  const pw = "correct horse battery staple".repeat(10);
  const pwErr = errorText(await parseClientArgs([LINK, "--username", "u", "--password", pw]));
  assert(pwErr.includes("--password: must be 1 to 255 bytes") && !pwErr.includes("horse"), pwErr);

  await withDir(async (dir) => {
    const path = `${dir}/c.json`;
    await Deno.writeTextFile(path, `{"server": "h:1", "mux": 0}`);
    const t = errorText(await parseClientArgs(["-c", path]));
    assert(t.includes(path) && t.includes("key: required") && t.includes("mux: must be"), t);
  });
  assert(errorText(await parseClientArgs([LINK, LINK])).includes("too many arguments"));
});
