/**
 * The NAT settings: `stun`, `stunInterval`, `turn` in a config, the CLI's
 * --stun/--turn flags and OSTP_TURN_PASSWORD, share-link turn= (never a
 * password), and what they do to the carrier choice.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { parseClientConfig } from "../../shared/config/client_config.ts";
import { ConfigError } from "../../shared/config/types.ts";
import { decodeShareLink, encodeShareLink, LinkError } from "../../shared/link.ts";
import { type ClientCliResult, parseClientArgs } from "../../client/cli.ts";

const KEY = "11".repeat(32);
const base = { server: "192.0.2.1:8443", key: KEY };

function issues(raw: unknown): string[] {
  try {
    parseClientConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i) => `${i.path}: ${i.message}`);
    throw e;
  }
  return [];
}

Deno.test("nat config: stun list with default ports, interval, and none by default", () => {
  assertEquals(parseClientConfig(base).nat, undefined);
  const c = parseClientConfig({
    ...base,
    stun: ["stun.example.net", "198.51.100.1:19302", "stun:[2001:db8::1]:3478"],
    stunInterval: 30,
  });
  assertEquals(c.nat?.stun, [
    { host: "stun.example.net", port: 3478 },
    { host: "198.51.100.1", port: 19302 },
    { host: "2001:db8::1", port: 3478 },
  ]);
  assertEquals(c.nat?.stunInterval, 30);
  assertEquals(c.carriers, undefined, "STUN alone leaves the carrier alone");
  assertEquals(issues({ ...base, stun: "x:99999" }), [
    "stun[0]: port must be a number from 0 to 65535",
  ]);
  assertEquals(issues({ ...base, stun: [], stunInterval: 2 }), [
    "stunInterval: must be 0 (off) or at least 5 seconds",
  ]);
});

Deno.test("nat config: a turn block makes turn the carrier; auto tries it after udp", () => {
  const turn = { server: "turn.example.net", username: "u", password: "p" };
  const c = parseClientConfig({ ...base, turn });
  assertEquals(c.nat?.turn, {
    server: { host: "turn.example.net", port: 3478 },
    username: "u",
    password: "p",
    transport: "udp",
  });
  assertEquals(c.carriers?.carrier, "turn");
  const auto = parseClientConfig({ ...base, turn, carrier: "auto" });
  assertEquals(auto.carriers?.fallback, ["udp", "turn", "faketcp", "tls"]);
  const udp = parseClientConfig({ ...base, turn, carrier: "udp" });
  assertEquals(udp.carriers?.carrier, "udp");
});

Deno.test("nat config: what is wrong with a turn block is named", () => {
  assertEquals(issues({ ...base, carrier: "turn" }), [
    'carrier: the "turn" carrier needs a turn block (turn.server, username, password)',
  ]);
  assertEquals(issues({ ...base, turn: { server: "t:3478", username: "u" } }), [
    "turn.password: required (password, passwordFile, OSTP_TURN_PASSWORD or --turn-password-file)",
  ]);
  assertEquals(
    issues({ ...base, turn: { server: "t", username: "u", password: "p", transport: "sctp" } }),
    ['turn.transport: expected one of "udp", "tcp", "tls"'],
  );
  assertEquals(
    issues({ ...base, turn: { server: "t", username: "u", password: "p", ca: "ca.pem" } }),
    ['turn.ca: only with "transport": "tls"'],
  );
  const tls = parseClientConfig({
    ...base,
    turn: { server: "turns:t.example", username: "u", password: "p", transport: "tls" },
  });
  assertEquals(tls.nat?.turn?.server, { host: "t.example", port: 5349 }, "turns default port");
  assertEquals(tls.nat?.turn?.transport, "tls");
  const both = issues({
    ...base,
    turn: { server: "t", username: "u", password: "p", passwordFile: "f" },
  });
  assertEquals(both, ["turn.passwordFile: give password or passwordFile, not both"]);
  const msgs = issues({
    ...base,
    turn: { server: "t", username: "u", password: "secret-pw", lifetime: 1 },
  });
  assertEquals(msgs, ["turn.lifetime: must be from 10 to 86400"]);
  assert(!msgs.join().includes("secret-pw"), "no message holds the password");
});

Deno.test("share link: turn= and turnuser= round-trip, and a link never holds a password", () => {
  const key = new Uint8Array(32).fill(7);
  const s = encodeShareLink({
    key,
    server: { host: "198.51.100.2", port: 8443 },
    turn: { server: { host: "turn.example.net", port: 3478 }, username: "alice@home" },
  });
  assert(s.includes("turn=turn.example.net%3A3478"), s);
  assert(s.includes("turnuser=alice%40home"), s);
  const l = decodeShareLink(s);
  assertEquals(l.turn, {
    server: { host: "turn.example.net", port: 3478 },
    username: "alice@home",
  });
  const bare = decodeShareLink(`ostp://${"A".repeat(43)}@198.51.100.2:8443?turn=t.example`);
  assertEquals(bare.turn?.server, { host: "t.example", port: 3478 });
  let err = "";
  try {
    decodeShareLink(`ostp://${"A".repeat(43)}@198.51.100.2:8443?turnuser=x`);
  } catch (e) {
    if (e instanceof LinkError) err = e.message;
  }
  assert(/turnuser needs turn=/.test(err), err);
});

function run(r: ClientCliResult) {
  if (r.kind !== "run") {
    throw new Error(`expected run, got ${r.kind}: ${"text" in r ? r.text : ""}`);
  }
  return r.config;
}

Deno.test("client cli: --stun, --turn, --turn-user, --turn-password-file and OSTP_TURN_PASSWORD", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/pw`, "from-file\n", { mode: 0o600 });
    const warn: string[] = [];
    const c = run(
      await parseClientArgs([
        "-s",
        "192.0.2.1:8443",
        "--key-file",
        await keyFile(dir),
        "--stun",
        "198.51.100.9",
        "--stun",
        "198.51.100.10:3479",
        "--turn",
        "turn.example.net:5349",
        "--turn-user",
        "bob",
        "--turn-password-file",
        `${dir}/pw`,
      ], { env: () => undefined, warn: (l) => warn.push(l) }),
    );
    assertEquals(c.nat?.stun.map((s) => `${s.host}:${s.port}`), [
      "198.51.100.9:3478",
      "198.51.100.10:3479",
    ]);
    assertEquals(c.nat?.turn?.server, { host: "turn.example.net", port: 5349 });
    assertEquals(c.nat?.turn?.username, "bob");
    assertEquals(c.nat?.turn?.password, "from-file");
    assertEquals(c.carriers?.carrier, "turn");
    // The environment's password, and the link's relay.
    const link = encodeShareLink({
      key: new Uint8Array(32).fill(9),
      server: { host: "192.0.2.1", port: 8443 },
      turn: { server: { host: "192.0.2.50", port: 3478 }, username: "carol" },
    });
    const env = (n: string) =>
      n === "OSTP_TURN_PASSWORD" ? "from-env" : n === "OSTP_LINK" ? link : undefined;
    const e = run(await parseClientArgs([], { env, warn: () => {} }));
    assertEquals(e.nat?.turn?.server, { host: "192.0.2.50", port: 3478 });
    assertEquals(e.nat?.turn?.username, "carol");
    assertEquals(e.nat?.turn?.password, "from-env");
    // A link's relay without a password is refused, naming what is missing.
    const noPw = await parseClientArgs([], {
      env: (n) => (n === "OSTP_LINK" ? link : undefined),
      warn: () => {},
    });
    assertEquals(noPw.kind, "error");
    assert("text" in noPw && /turn\.password: required/.test(noPw.text), JSON.stringify(noPw));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function keyFile(dir: string): Promise<string> {
  await Deno.writeTextFile(`${dir}/key`, KEY, { mode: 0o600 });
  return `${dir}/key`;
}
