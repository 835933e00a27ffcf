import { assert, assertEquals, assertRejects, assertThrows } from "../support/assert.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";
import {
  ConfigError,
  formatHostPort,
  HostPortError,
  parseHostPort,
  parseJsonc,
} from "../../shared/config/types.ts";
import {
  loadServerConfig,
  parseServerConfig,
  SERVER_DEFAULTS,
  serverConfigTemplate,
} from "../../shared/config/server_config.ts";
import {
  CLIENT_DEFAULTS,
  clientConfigTemplate,
  loadClientConfig,
  parseClientConfig,
} from "../../shared/config/client_config.ts";
import { parseRoutingConfig } from "../../client/router/config.ts";

const KEY = new Uint8Array(32).map((_, i) => i);
/** The routing of a config without routing fields: no rules, everything to ostp. */
const NO_ROUTING = parseRoutingConfig({});
const KEY_HEX = formatAccessKey(KEY, "hex");
const KEY_B64 = formatAccessKey(KEY, "base64url");
const KEY2 = new Uint8Array(32).fill(0xab);
const KEY2_HEX = formatAccessKey(KEY2, "hex");

/** Runs `fn`, expects a ConfigError, and returns its issues as "path: message" strings. */
function issuesOf(fn: () => unknown): string[] {
  const e = assertThrows(fn, ConfigError) as ConfigError;
  for (const i of e.issues) assert(e.message.includes(i.message), "message lists every issue");
  return e.issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message));
}

function hasIssue(issues: string[], prefix: string): void {
  assert(
    issues.some((i) => i.startsWith(prefix)),
    `expected an issue starting with ${JSON.stringify(prefix)} in ${JSON.stringify(issues)}`,
  );
}

// --- host:port -------------------------------------------------------------

Deno.test("hostport: domain, IPv4, bracketed IPv6, default port", () => {
  assertEquals(parseHostPort("example.com:443"), { host: "example.com", port: 443 });
  assertEquals(parseHostPort("1.2.3.4:0"), { host: "1.2.3.4", port: 0 });
  assertEquals(parseHostPort("[::1]:8443"), { host: "::1", port: 8443 });
  assertEquals(parseHostPort("[2001:DB8::1]:80"), { host: "2001:db8::1", port: 80 });
  assertEquals(parseHostPort("localhost", 1088), { host: "localhost", port: 1088 });
  assertEquals(parseHostPort("[fe80::1]", 9), { host: "fe80::1", port: 9 });
  assertEquals(parseHostPort(" my_host.lan:65535 "), { host: "my_host.lan", port: 65535 });
});

Deno.test("hostport: format adds brackets for IPv6 and round-trips", () => {
  for (const s of ["example.com:443", "1.2.3.4:1", "[::1]:8443", "[2001:db8::ffff:1.2.3.4]:5"]) {
    assertEquals(formatHostPort(parseHostPort(s)), s.replace("ffff:1.2.3.4", "ffff:1.2.3.4"));
  }
  assertEquals(formatHostPort({ host: "::", port: 1 }), "[::]:1");
});

Deno.test("hostport: rejects malformed input with a reason", () => {
  const bad: [string, string][] = [
    ["", "empty"],
    ["example.com", "port missing"],
    ["example.com:", "port must be"],
    ["example.com:65536", "port must be"],
    ["example.com:-1", "port must be"],
    ["example.com:80a", "port must be"],
    ["::1:8443", "needs brackets"],
    ["[::1:8443", 'missing "]"'],
    ["[::1]8443", "[IPv6]:port"],
    ["[::g]:1", "invalid IPv6"],
    ["[1.2.3.4]:1", "invalid IPv6"],
    ["256.1.1.1:1", "invalid IPv4"],
    ["01.1.1.1:1", "invalid IPv4"],
    ["1.2.3:1", "invalid IPv4"],
    ["-bad.com:1", "invalid host"],
    ["a..b:1", "invalid host"],
    ["ex ample.com:1", "ASCII"],
    ["bücher.de:1", "ASCII"],
    [":80", "host is missing"],
    ["a".repeat(64) + ".com:1", "invalid host"],
  ];
  for (const [s, why] of bad) {
    const e = assertThrows(() => parseHostPort(s), HostPortError);
    assert(e.message.includes(why), `${JSON.stringify(s)}: "${e.message}" lacks "${why}"`);
  }
});

// --- JSONC -----------------------------------------------------------------

Deno.test("jsonc: comments, trailing commas, and // or /* inside strings", () => {
  const text = `// leading comment
  {
    /* block
       comment */ "link": "ostp://k@h:1/x//y#n", // trailing comment
    "glob": "a/*b*/c",
    "esc": "q\\"// not a comment \\\\",
    "unicode": "\\u00e9\\n",
    "list": [1, 2.5, -3e2, true, false, null,],
    "nested": { "a": [], "b": {}, },
  }
  // done`;
  assertEquals(parseJsonc(text), {
    link: "ostp://k@h:1/x//y#n",
    glob: "a/*b*/c",
    esc: 'q"// not a comment \\',
    unicode: "é\n",
    list: [1, 2.5, -300, true, false, null],
    nested: { a: [], b: {} },
  });
  assertEquals(parseJsonc("\ufeff[]"), []);
  assertEquals(parseJsonc('{"a":1}//no newline at end'), { a: 1 });
});

Deno.test("jsonc: errors give line and column and never quote the text", () => {
  const cases: [string, string][] = [
    ["", "empty"],
    ["// only a comment", "empty"],
    ['{"a": 1', "line 1, column 8: unexpected end of file"],
    ['{\n  "a": 1\n  "b": 2\n}', 'line 3, column 3: expected "," or "}"'],
    ['{"a": /* open', "unterminated /* comment"],
    ['{"a": "x\ny"}', "control character"],
    ['{"a": "\\q"}', "invalid escape"],
    ["{'a': 1}", "field name in double quotes"],
    ['{"a": 01}', "invalid number"],
    ['{"a": tru}', "expected a value"],
    ['{"a": 1, "a": 2}', 'duplicate field "a"'],
    ['{"a": 1} x', "after the end"],
    ["[1,,2]", "expected a value"],
    ["[".repeat(100) + "]".repeat(100), "nested too deeply"],
  ];
  for (const [text, why] of cases) {
    const e = assertThrows(() => parseJsonc(text, "f.json"), ConfigError) as ConfigError;
    assert(e.message.includes(why), `${JSON.stringify(text)}: "${e.message}" lacks "${why}"`);
    assert(e.message.includes("f.json"));
  }
  // A secret on a broken line is not echoed.
  const e = assertThrows(() => parseJsonc(`{"keys": ["${KEY_HEX}" "x"]}`), ConfigError);
  assert(!e.message.includes(KEY_HEX));
});

Deno.test("jsonc: __proto__ is a plain field, not a prototype", () => {
  const v = parseJsonc('{"__proto__": {"polluted": 1}}') as Record<string, unknown>;
  assertEquals(Object.getPrototypeOf(v), Object.prototype);
  assert(Object.hasOwn(v, "__proto__"));
  assertEquals(({} as Record<string, unknown>).polluted, undefined);
  const issues = issuesOf(() => parseServerConfig(v));
  hasIssue(issues, "__proto__: unknown field");
});

// --- server ----------------------------------------------------------------

Deno.test("server config: defaults", () => {
  const cfg = parseServerConfig({ keys: [KEY_HEX] });
  assertEquals(cfg, {
    listen: [{ host: "0.0.0.0", port: 8443 }],
    keys: [KEY],
    maxSessions: 1024,
    handshakeRate: 200,
    handshakeBurst: 400,
    idleTimeout: 600,
    replayWindow: 300,
    replayCacheSize: 131072,
    connectTimeout: 10,
    maxStreamsPerSession: 8192,
    mtu: 1350,
    log: { level: "info", format: "text" },
    users: [],
    stateFile: null,
    statsFlushInterval: 5,
    egress: { allow: [], deny: [] },
    allowInPorts: [],
  });
  assertEquals(cfg.publicAddress, undefined);
  // The defaults object is not shared with results.
  cfg.listen[0].port = 1;
  assertEquals(SERVER_DEFAULTS.listen[0].port, 8443);
  // null means "use the default".
  assertEquals(parseServerConfig({ keys: [KEY_HEX], mtu: null, publicAddress: null }).mtu, 1350);
});

Deno.test("server config: every field set, IPv6 listen, base64url keys", () => {
  const cfg = parseServerConfig({
    listen: ["[::]:443", "127.0.0.1:0", "[fe80::1]:9"],
    keys: [KEY_B64, KEY2_HEX],
    publicAddress: "vpn.example.com:443",
    maxSessions: 10,
    handshakeRate: 2.5,
    handshakeBurst: 5,
    idleTimeout: 60.5,
    replayWindow: 30,
    replayCacheSize: 2048,
    connectTimeout: 0.5,
    maxStreamsPerSession: 16,
    mtu: 576,
    log: { level: "trace", format: "json" },
  });
  assertEquals(cfg.listen, [
    { host: "::", port: 443 },
    { host: "127.0.0.1", port: 0 },
    { host: "fe80::1", port: 9 },
  ]);
  assertEquals(cfg.keys, [KEY, KEY2]);
  assertEquals(cfg.publicAddress, { host: "vpn.example.com", port: 443 });
  assertEquals(cfg.handshakeRate, 2.5);
  assertEquals(cfg.idleTimeout, 60.5);
  assertEquals(cfg.log, { level: "trace", format: "json" });
});

Deno.test("server config: all problems are reported at once", () => {
  const issues = issuesOf(() =>
    parseServerConfig({
      listen: ["0.0.0.0:8443", "nope", 5, "[::1]:99999"],
      keys: [KEY_HEX, "short", 7, KEY_B64],
      publicAddress: "0.0.0.0:443",
      maxSessions: 0,
      handshakeRate: "fast",
      handshakeBurst: 1.5,
      idleTimeout: -1,
      replayWindow: 1e9,
      replayCacheSize: 10,
      connectTimeout: Infinity,
      maxStreamsPerSession: [],
      mtu: 65001,
      log: { level: "verbose", format: "xml", colour: true },
      listne: [],
    })
  );
  hasIssue(issues, 'listen[1]: expected "host:port"');
  hasIssue(issues, 'listen[2]: expected "host:port", got number');
  hasIssue(issues, "listen[3]: port must be");
  hasIssue(issues, "keys[1]: access key must be");
  hasIssue(issues, "keys[2]: expected an access key string");
  hasIssue(issues, "keys[3]: duplicate of keys[0]");
  hasIssue(issues, "publicAddress: must be an address clients can reach");
  hasIssue(issues, "maxSessions: must be from 1 to 1000000");
  hasIssue(issues, "handshakeRate: expected a number, got string");
  hasIssue(issues, "handshakeBurst: expected an integer");
  hasIssue(issues, "idleTimeout: must be from 1 to 604800 seconds");
  hasIssue(issues, "replayWindow: must be from");
  hasIssue(issues, "replayCacheSize: must be from 1024");
  hasIssue(issues, "connectTimeout: expected a number");
  hasIssue(issues, "maxStreamsPerSession: expected an integer, got array");
  hasIssue(issues, "mtu: must be from 576 to 65000");
  hasIssue(issues, 'log.level: expected one of "trace", "debug", "info", "warning", "error"');
  hasIssue(issues, 'log.format: expected one of "text", "json"');
  hasIssue(issues, "log.colour: unknown field");
  hasIssue(issues, 'listne: unknown field (did you mean "listen"?)');
  assertEquals(issues.length, 20);
});

Deno.test("server config: keys required, non-empty; listen non-empty; root must be an object", () => {
  hasIssue(issuesOf(() => parseServerConfig({})), "keys: required");
  hasIssue(issuesOf(() => parseServerConfig({ keys: [] })), "keys: needs at least one access key");
  hasIssue(issuesOf(() => parseServerConfig({ keys: KEY_HEX })), "keys: expected an array");
  hasIssue(
    issuesOf(() => parseServerConfig({ keys: [KEY_HEX], listen: [] })),
    "listen: needs at least one",
  );
  hasIssue(
    issuesOf(() => parseServerConfig({ keys: [KEY_HEX], listen: ["a:1", "a:1"] })),
    "listen[1]: duplicate of listen[0]",
  );
  hasIssue(issuesOf(() => parseServerConfig([])), "expected an object, got array");
  hasIssue(issuesOf(() => parseServerConfig(null)), "expected an object, got null");
  hasIssue(
    issuesOf(() => parseServerConfig({ keys: [KEY_HEX], log: "debug" })),
    "log: expected an object, got string",
  );
});

Deno.test("server config: error message format lists every issue with its path", () => {
  const e = assertThrows(
    () => parseServerConfig({ keys: [KEY_HEX], listen: ["a:1", "b"] }, "server.json"),
    ConfigError,
  ) as ConfigError;
  assertEquals(e.issues, [{ path: "listen[1]", message: 'expected "host:port" (port missing)' }]);
  assertEquals(
    e.message,
    'invalid configuration in server.json:\n  listen[1]: expected "host:port" (port missing)',
  );
});

Deno.test("server config: secrets never appear in error messages", () => {
  const secretish = KEY_HEX.substring(0, 60) + "zzzz"; // 64 chars, not hex
  const longB64 = KEY_B64 + "AAAA";
  const e = assertThrows(() =>
    parseServerConfig({
      keys: [secretish, longB64, KEY_HEX, KEY_HEX, 12],
      [KEY_HEX]: "pasted in the wrong place",
      log: { level: KEY_HEX },
      mtu: KEY_HEX,
    }), ConfigError) as ConfigError;
  for (const s of [secretish, longB64, KEY_HEX, KEY_B64, KEY_HEX.substring(0, 16)]) {
    assert(!e.message.includes(s), "message must not contain key material");
    assert(!JSON.stringify(e.issues).includes(s), "issues must not contain key material");
  }
  assert(e.message.includes("<redacted>: unknown field"));
});

Deno.test("server config: template parses to the defaults and documents every field", () => {
  const key = generateAccessKey();
  const text = serverConfigTemplate({ keys: [key] });
  const cfg = parseServerConfig(parseJsonc(text));
  assertEquals(cfg, { ...SERVER_DEFAULTS, keys: [key] } as unknown);
  for (
    const f of [
      "listen",
      "keys",
      "publicAddress",
      "maxSessions",
      "handshakeRate",
      "handshakeBurst",
      "idleTimeout",
      "replayWindow",
      "replayCacheSize",
      "connectTimeout",
      "maxStreamsPerSession",
      "mtu",
      "log",
      "egress",
    ]
  ) assert(text.includes(`"${f}"`), `template lacks ${f}`);
  // The commented egress example is valid config.
  const example = /\/\/ ("egress": \{.*\}),$/m.exec(text);
  assert(example, "template shows an egress example");
  const withExample = parseServerConfig(parseJsonc(`{"keys": ["${KEY_HEX}"], ${example[1]}}`));
  assertEquals(withExample.egress.allow.length, 2);
  assertEquals(withExample.egress.deny.length, 1);
  // Without keys a fresh one is generated, so the template is valid as is.
  assertEquals(parseServerConfig(parseJsonc(serverConfigTemplate())).keys.length, 1);
});

Deno.test("server config: egress entries are parsed, defaults are empty and fresh", () => {
  const cfg = parseServerConfig({
    keys: [KEY_HEX],
    egress: {
      allow: ["10.91.2.0/24", "127.0.0.1/32", "127.0.0.1:8080", "[::1]:8000-8100"],
      deny: ["0.0.0.0/0:25"],
    },
  });
  assertEquals(cfg.egress.allow.map((e) => [e.prefix.bits, e.ports]), [
    [96 + 24, null],
    [128, null],
    [128, { lo: 8080, hi: 8080 }],
    [128, { lo: 8000, hi: 8100 }],
  ]);
  assertEquals(cfg.egress.deny.map((e) => [e.prefix.bits, e.ports]), [[96, { lo: 25, hi: 25 }]]);
  // Each list is optional; absent means empty, and results do not share the defaults' arrays.
  const a = parseServerConfig({ keys: [KEY_HEX], egress: { deny: ["10.0.0.0/8:22"] } });
  assertEquals([a.egress.allow.length, a.egress.deny.length], [0, 1]);
  const b = parseServerConfig({ keys: [KEY_HEX] });
  b.egress.allow.push(a.egress.deny[0]);
  assertEquals(SERVER_DEFAULTS.egress.allow.length, 0);
  assertEquals(parseServerConfig({ keys: [KEY_HEX] }).egress.allow.length, 0);
});

Deno.test("server config: egress problems name the entry by its path and never echo it", () => {
  const issues = issuesOf(() =>
    parseServerConfig({
      keys: [KEY_HEX],
      egress: {
        allow: ["10.1.2.3/8", 7, "::1:8000-8100", "secret-host.example"],
        deny: "0.0.0.0/0",
        block: [],
      },
    })
  );
  hasIssue(issues, "egress.allow[0]: host bits are set past /8 (the network is 10.0.0.0/8)");
  hasIssue(issues, "egress.allow[1]: expected a string, got a number");
  hasIssue(issues, "egress.allow[2]: ");
  assert(issues.some((i) => i.startsWith("egress.allow[2]") && i.includes("brackets")));
  hasIssue(issues, "egress.allow[3]: ");
  hasIssue(issues, "egress.deny: expected an array of strings, got a string");
  hasIssue(issues, 'egress.block: unknown field (expected "allow" or "deny")');
  assertEquals(issues.length, 6);
  assert(!issues.join("\n").includes("secret-host"), "an entry is never repeated");
  hasIssue(
    issuesOf(() => parseServerConfig({ keys: [KEY_HEX], egress: ["127.0.0.1"] })),
    "egress: expected an object, got an array",
  );
});

Deno.test("server config: load from a file; missing file and bad JSON name the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/server.json`;
    await Deno.writeTextFile(
      path,
      `{
        // the one key
        "keys": ["${KEY_HEX}",],
        "listen": ["[::1]:0"], /* v6 loopback */
      }`,
    );
    const cfg = await loadServerConfig(path);
    assertEquals(cfg.keys, [KEY]);
    assertEquals(cfg.listen, [{ host: "::1", port: 0 }]);

    const missing = await assertRejects(() => loadServerConfig(`${dir}/nope.json`), ConfigError);
    assert(missing.message.includes("nope.json") && missing.message.includes("file not found"));

    await Deno.writeTextFile(path, `{"keys": ["${KEY_HEX}"]`);
    const bad = await assertRejects(() => loadServerConfig(path), ConfigError);
    assert(bad.message.includes("server.json") && bad.message.includes("line 1"));
    assert(!bad.message.includes(KEY_HEX));

    await Deno.writeFile(path, new Uint8Array([0x7b, 0xff, 0x7d]));
    const utf = await assertRejects(() => loadServerConfig(path), ConfigError);
    assert(utf.message.includes("UTF-8"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// --- client ----------------------------------------------------------------

Deno.test("client config: defaults", () => {
  const cfg = parseClientConfig({ server: "vpn.example.com:8443", key: KEY_B64 });
  assertEquals(cfg, {
    server: { host: "vpn.example.com", port: 8443 },
    key: KEY,
    listen: { host: "127.0.0.1", port: 1088 },
    mux: 1,
    mtu: 1350,
    keepalive: 10,
    idleTimeout: 30,
    connectTimeout: 10,
    reconnect: { initialDelay: 0.5, maxDelay: 30 },
    log: { level: "info", format: "text" },
    mappings: [],
    proxy: true,
    hopInterval: 0,
    systemProxy: false,
    routing: NO_ROUTING,
  });
  assertEquals(cfg.auth, undefined);
});

Deno.test("client config: every field set, IPv6 server and listen", () => {
  const cfg = parseClientConfig({
    server: "[2001:db8::1]:443",
    key: KEY_HEX,
    listen: "[::1]:1080",
    auth: { username: "ü", password: "p".repeat(255) },
    mux: 16,
    mtu: 65000,
    keepalive: 0.5,
    idleTimeout: 5,
    connectTimeout: 3,
    reconnect: { initialDelay: 1, maxDelay: 1 },
    log: { level: "error", format: "json" },
  });
  assertEquals(cfg.server, { host: "2001:db8::1", port: 443 });
  assertEquals(cfg.listen, { host: "::1", port: 1080 });
  assertEquals(cfg.auth, { username: "ü", password: "p".repeat(255) });
  assertEquals(cfg.reconnect, { initialDelay: 1, maxDelay: 1 });
});

Deno.test("client config: validation errors for each field", () => {
  const issues = issuesOf(() =>
    parseClientConfig({
      server: "0.0.0.0:1",
      key: 42,
      listen: "127.0.0.1",
      auth: { username: "", password: "x".repeat(256), realm: "r" },
      mux: 17,
      mtu: 575,
      keepalive: "10",
      idleTimeout: 0.5,
      connectTimeout: 301,
      reconnect: { initialDelay: 5, maxDelay: 1, jitter: 1 },
      log: { level: "warn" },
      severs: "x",
    })
  );
  hasIssue(issues, "server: must be an address to connect to");
  hasIssue(issues, "key: expected an access key string");
  hasIssue(issues, 'listen: expected "host:port"');
  hasIssue(issues, "auth.username: must be 1 to 255 bytes");
  hasIssue(issues, "auth.password: must be 1 to 255 bytes of UTF-8 (got 256)");
  hasIssue(issues, "auth.realm: unknown field");
  hasIssue(issues, "mux: must be from 1 to 16");
  hasIssue(issues, "mtu: must be from 576 to 65000");
  hasIssue(issues, "keepalive: expected a number, got string");
  hasIssue(issues, "idleTimeout: must be 0 (never) or at least 1 second");
  hasIssue(issues, "connectTimeout: must be from 0.1 to 300 seconds");
  hasIssue(issues, "reconnect.maxDelay: must not be less than initialDelay");
  hasIssue(issues, "reconnect.jitter: unknown field");
  hasIssue(issues, "log.level: expected one of");
  hasIssue(issues, 'severs: unknown field (did you mean "server"?)');
  assertEquals(issues.length, 15);
});

Deno.test("client config: required fields, port 0 and cross-field checks", () => {
  const missing = issuesOf(() => parseClientConfig({}));
  assertEquals(missing, ["server: required", "key: required"]);
  hasIssue(
    issuesOf(() => parseClientConfig({ server: "h:0", key: KEY_HEX })),
    "server: port must be",
  );
  hasIssue(
    issuesOf(() => parseClientConfig({ server: "h:1", key: KEY_HEX, keepalive: 60 })),
    "keepalive: must be less than idleTimeout",
  );
  hasIssue(
    issuesOf(() => parseClientConfig({ server: "h:1", key: KEY_HEX, idleTimeout: 10 })),
    "idleTimeout: must be greater than keepalive",
  );
  hasIssue(
    issuesOf(() => parseClientConfig({ server: "h:1", key: KEY_HEX, auth: { username: "u" } })),
    "auth.password: required",
  );
  // listen may use port 0 (any free port).
  assertEquals(
    parseClientConfig({ server: "h:1", key: KEY_HEX, listen: "127.0.0.1:0" }).listen.port,
    0,
  );
});

Deno.test("client config: the password and key never appear in error messages", () => {
  const password = "hunter2-" + "x".repeat(300);
  const e = assertThrows(() =>
    parseClientConfig({
      server: "h:1",
      key: KEY_HEX.substring(0, 63),
      auth: { username: "u", password },
    }), ConfigError) as ConfigError;
  assert(!e.message.includes("hunter2"));
  assert(!e.message.includes(KEY_HEX.substring(0, 63)));
  hasIssue(e.issues.map((i) => `${i.path}: ${i.message}`), "auth.password:");
});

Deno.test("client config: template parses to the defaults; load from a file", async () => {
  const text = clientConfigTemplate({ server: { host: "::1", port: 9 }, key: KEY });
  const cfg = parseClientConfig(parseJsonc(text));
  assertEquals(
    cfg,
    {
      ...CLIENT_DEFAULTS,
      server: { host: "::1", port: 9 },
      key: KEY,
      routing: NO_ROUTING,
    } as unknown,
  );
  for (
    const f of [
      "server",
      "key",
      "listen",
      "auth",
      "mux",
      "mtu",
      "keepalive",
      "idleTimeout",
      "connectTimeout",
      "reconnect",
      "log",
    ]
  ) assert(text.includes(`"${f}"`), `template lacks ${f}`);
  parseClientConfig(parseJsonc(clientConfigTemplate()));

  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/c.json`, text);
    assertEquals(await loadClientConfig(`${dir}/c.json`), cfg);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("client config: routing fields, the exclude block as users write it", () => {
  const cfg = parseClientConfig(parseJsonc(`{
    "server": "vpn.example.net:8443",
    "key": "${KEY_HEX}",
    "exclude": {
      "domains": ["trusted-site.com", "local.lan"],
      "ips": ["192.168.1.0/24", "10.0.0.0/8"],
      "processes": ["discord.exe", "steam.exe"]
    },
    "rules": [
      { "port": 25, "outbound": "block" },
      { "inbound": "proxy", "network": "udp", "outbound": "direct" },
      { "domainSuffix": "corp.example", "outbound": "corp" }
    ],
    "outbounds": [{ "name": "corp", "type": "http", "url": "http://u:p@proxy.corp.example:3128" }],
    "defaultOutbound": "ostp",
    "resolve": "onDemand"
  }`));
  assertEquals(cfg.routing.rules.map((r) => `${r.label} ${r.outbound}`), [
    "exclude.domains direct",
    "exclude.ips direct",
    "exclude.processes direct",
    "rules[0] block",
    "rules[1] direct",
    "rules[2] corp",
  ]);
  assertEquals(cfg.routing.resolve, "onDemand");
  assertEquals(cfg.routing.outbounds.map((o) => o.name), ["ostp", "direct", "block", "corp"]);
});

Deno.test("client config: routing errors name the field; the proxy password never shows", () => {
  const issues = issuesOf(() =>
    parseClientConfig({
      server: "vpn.example.net:8443",
      key: KEY_HEX,
      exclude: { domains: ["*.x.com"], hosts: [] },
      rules: [{ inbound: "tap", outbound: "direct" }, { port: 1, outbound: "nowhere" }],
      outbounds: [{ name: "p", type: "http", url: "ftp://u:sekrit@h:1" }],
    })
  );
  assertEquals(issues, [
    "exclude.hosts: unknown field",
    "exclude.domains[0]: wildcards are not supported: a suffix already matches every subdomain",
    'outbounds[0].url: the scheme must be "http" (a proxy spoken to in plain HTTP CONNECT)',
    "rules[0].inbound: no inbound has this name",
    'rules[1].outbound: unknown outbound (not one of "ostp", "direct", "block" nor declared in "outbounds")',
  ]);
  assert(!issues.join("\n").includes("sekrit"));
});

Deno.test("client config: the template's routing examples, uncommented, validate", () => {
  const text = clientConfigTemplate({ server: { host: "::1", port: 9 }, key: KEY });
  const lines = text.split("\n");
  const start = lines.findIndex((l) => l.includes('// "exclude": {'));
  assert(start > 0, "the template shows the exclude block");
  const uncommented = lines.map((l, i) =>
    i >= start ? l.replace(/^(\s*)\/\/ (?=[\s"{}\]])/, "$1") : l
  )
    .join("\n");
  const cfg = parseClientConfig(parseJsonc(uncommented));
  assertEquals(cfg.routing.rules.map((r) => r.label), [
    "exclude.domains",
    "exclude.ips",
    "exclude.processes",
    "rules[0]",
    "rules[1]",
  ]);
  assertEquals(cfg.routing.outbounds.at(-1)?.name, "corp");
});
