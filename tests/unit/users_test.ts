/** Users: config validation, allowed() reasons, the SQLite counter store. */
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";
import { ConfigError } from "../../shared/config/types.ts";
import { parseServerConfig } from "../../shared/config/server_config.ts";
import { allowed, newCounters, UserRegistry, usersOf } from "../../server/users.ts";
import { CounterStore } from "../../server/store.ts";

const K1 = formatAccessKey(generateAccessKey(), "hex");
const K2 = formatAccessKey(generateAccessKey(), "hex");
const K3 = formatAccessKey(generateAccessKey(), "base64url");

function issuesOf(raw: unknown): string[] {
  try {
    parseServerConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i) => `${i.path}: ${i.message}`);
    throw e;
  }
  throw new Error("expected a ConfigError");
}

function hasIssue(issues: string[], prefix: string): void {
  assert(issues.some((i) => i.startsWith(prefix)), `no "${prefix}" in:\n${issues.join("\n")}`);
}

Deno.test("users config: users alone suffice; fields parsed; keys become key-N users", () => {
  const cfg = parseServerConfig({
    users: [
      { name: "alice", key: K1, limitBytes: 1000, expires: "2030-01-31T00:00:00Z" },
      { name: "bob.b_2-x", key: K2, enabled: false },
    ],
    stateFile: "/tmp/x.db",
    statsFlushInterval: 1,
  });
  assertEquals(cfg.keys.length, 0);
  assertEquals(cfg.users.length, 2);
  assertEquals(cfg.users[0].limitBytes, 1000);
  assertEquals(cfg.users[0].expires, Date.UTC(2030, 0, 31));
  assertEquals(cfg.users[0].enabled, true);
  assertEquals(cfg.users[1].enabled, false);
  assertEquals(cfg.stateFile, "/tmp/x.db");
  assertEquals(cfg.statsFlushInterval, 1);
  const both = parseServerConfig({ keys: [K3], users: [{ name: "a", key: K1 }] });
  assertEquals(usersOf(both).map((u) => u.name), ["key-1", "a"]);
  assertEquals(
    parseServerConfig({ users: [{ name: "a", key: K1, expires: "2030-02-01" }] })
      .users[0].expires,
    Date.UTC(2030, 1, 1),
  );
});

Deno.test("users config: field-level errors", () => {
  hasIssue(issuesOf({}), "keys: required");
  hasIssue(issuesOf({ keys: [], users: [] }), "keys: needs at least one access key");
  hasIssue(issuesOf({ users: {} }), "users: expected an array");
  const issues = issuesOf({
    keys: [K1],
    users: [
      { name: "ok", key: K2 },
      { name: "ok", key: K3 }, // duplicate name
      { name: "dup-key", key: K1 }, // same key as keys[0]
      { name: "bad name!", key: generateHex() },
      { name: "x".repeat(65), key: generateHex() },
      { name: "key-3", key: generateHex() },
      { name: "d", key: generateHex(), expires: "next tuesday" },
      { name: "e", key: generateHex(), expires: "2030-13-45T99:00:00Z" },
      { name: "f", key: generateHex(), limitBytes: 0 },
      { name: "g", key: generateHex(), limitBytes: 1.5 },
      { name: "h", key: generateHex(), enabled: "yes" },
      { key: generateHex(), colour: "red" },
      { name: "i", key: K2 }, // duplicate of users[0].key
    ],
    stateFile: 7,
    statsFlushInterval: 0,
  });
  hasIssue(issues, "users[1].name: duplicate of users[0].name");
  hasIssue(issues, "users[2].key: duplicate of keys[0]");
  hasIssue(issues, "users[3].name: expected 1 to 64 characters");
  hasIssue(issues, "users[4].name: expected 1 to 64 characters");
  hasIssue(issues, 'users[5].name: names "key-N" are reserved');
  hasIssue(issues, "users[6].expires: expected an ISO-8601 date");
  hasIssue(issues, "users[7].expires: expected an ISO-8601 date");
  hasIssue(issues, "users[8].limitBytes: must be from 1");
  hasIssue(issues, "users[9].limitBytes: expected an integer");
  hasIssue(issues, "users[10].enabled: expected true or false");
  hasIssue(issues, "users[11].name: required");
  hasIssue(issues, "users[11].colour: unknown field");
  hasIssue(issues, "users[12].key: duplicate of users[0].key");
  hasIssue(issues, "stateFile: expected a string");
  hasIssue(issues, "statsFlushInterval: must be from");
  // No key ever appears in a message.
  for (const i of issues) assert(!i.includes(K1) && !i.includes(K2), "a key leaked");
});

function generateHex(): string {
  return formatAccessKey(generateAccessKey(), "hex");
}

Deno.test("users: allowed() gives the reason, in order disabled > expired > limit", () => {
  const now = Date.UTC(2030, 0, 1);
  const c = newCounters();
  assertEquals(allowed({ enabled: true, counters: c }, now), null);
  assertEquals(allowed({ enabled: false, counters: c }, now), "account disabled");
  assertEquals(allowed({ enabled: true, expires: now, counters: c }, now), "account expired");
  assertEquals(allowed({ enabled: true, expires: now + 1, counters: c }, now), null);
  const used = { ...c, bytesUp: 600, bytesDown: 400 };
  assertEquals(allowed({ enabled: true, limitBytes: 1001, counters: used }, now), null);
  assertEquals(
    allowed({ enabled: true, limitBytes: 1000, counters: used }, now),
    "traffic limit reached",
  );
  assertEquals(
    allowed({ enabled: false, expires: 0, limitBytes: 1, counters: used }, now),
    "account disabled",
  );
});

Deno.test("users: registry counts, reports the limit crossing once, keeps counters on update", () => {
  const key = generateAccessKey();
  const reg = new UserRegistry([{ name: "a", key, limitBytes: 100, enabled: true }]);
  const a = reg.list()[0];
  assertEquals(reg.addBytes(a, 50, 0), false);
  assertEquals(reg.addBytes(a, 0, 50), true);
  assertEquals(reg.addBytes(a, 1, 0), false);
  reg.addStream(a);
  reg.addSession(a);
  assertEquals(reg.takeDirty().map(([n]) => n), ["a"]);
  assertEquals(reg.takeDirty(), []);
  reg.update([{ name: "a", key, enabled: false }]);
  const a2 = reg.get("a")!;
  assertEquals(a2.counters.bytesUp, 51);
  assertEquals(a2.counters.streams, 1);
  assertEquals(allowed(a2, Date.now()), "account disabled");
});

Deno.test("store: counters round-trip through a file; flush is one transaction", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/state.db`;
  try {
    const s = new CounterStore(path);
    s.save([["a", { bytesUp: 1, bytesDown: 2, streams: 3, sessions: 4, lastSeen: 5 }]]);
    s.save([["a", { bytesUp: 10, bytesDown: 20, streams: 30, sessions: 40, lastSeen: 50 }], [
      "b",
      { bytesUp: 2 ** 40, bytesDown: 0, streams: 0, sessions: 1, lastSeen: 0 },
    ]]);
    s.close();
    const t = new CounterStore(path);
    const m = t.load();
    assertEquals(m.get("a"), {
      bytesUp: 10,
      bytesDown: 20,
      streams: 30,
      sessions: 40,
      lastSeen: 50,
    });
    assertEquals(m.get("b")!.bytesUp, 2 ** 40);
    // A row that fails (negative counter) rolls back the whole flush.
    assertThrows(() =>
      t.save([
        ["a", { bytesUp: 99, bytesDown: 99, streams: 99, sessions: 99, lastSeen: 99 }],
        ["c", { bytesUp: -1, bytesDown: 0, streams: 0, sessions: 0, lastSeen: 0 }],
      ])
    );
    const after = t.load();
    assertEquals(after.get("a")!.bytesUp, 10, "the first row of the failed flush is not kept");
    assertEquals(after.has("c"), false);
    // The store still works after a rollback.
    t.save([["c", { bytesUp: 1, bytesDown: 0, streams: 0, sessions: 0, lastSeen: 0 }]]);
    assertEquals(t.load().get("c")!.bytesUp, 1);
    t.close();
    // Loaded counters feed a registry.
    const reg = new UserRegistry([{ name: "a", key: generateAccessKey(), enabled: true }]);
    const u = new CounterStore(path);
    reg.load(u.load());
    u.close();
    assertEquals(reg.get("a")!.counters.bytesDown, 20);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
