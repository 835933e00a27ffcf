import { assert, assertEquals } from "../support/assert.ts";
import {
  addLogListener,
  getLog,
  isSecretName,
  levelFor,
  type LogListenerRecord,
  redact,
  REDACTED,
  sanitizeLogValue,
  setupLogging,
} from "../../shared/log.ts";

const SECRET = "s3cr3t-value-that-must-not-leak";

Deno.test("log: getLog puts categories under the ostp root", () => {
  assertEquals(getLog("server.dispatcher").category, ["ostp", "server", "dispatcher"]);
  assertEquals(getLog("client").category, ["ostp", "client"]);
  assertEquals(getLog("").category, ["ostp"]);
});

Deno.test("log: listeners receive records at or above the level; unsubscribe works", async () => {
  await setupLogging({ level: "info", format: "text" }, { output: null });
  const got: LogListenerRecord[] = [];
  const off = addLogListener((r) => got.push(r));
  const broken = addLogListener(() => {
    throw new Error("listener bug");
  });
  try {
    const log = getLog("server.dispatcher");
    log.debug("dropped: below the level");
    log.info("session {id} opened", { id: 7, peer: "1.2.3.4:5" });
    log.warning("slow");
    assertEquals(got.length, 2);
    assertEquals(got[0].level, "info");
    assertEquals(got[0].category, "server.dispatcher");
    assertEquals(got[0].message, "session 7 opened");
    assertEquals(got[0].properties, { id: 7, peer: "1.2.3.4:5" });
    assert(Math.abs(got[0].timestamp - Date.now()) < 60_000);
    assertEquals(got[1].level, "warning");
  } finally {
    off();
    broken();
  }
  getLog("x").error("after unsubscribe");
  assertEquals(got.length, 2);
});

Deno.test("log: setupLogging can reconfigure (level and format)", async () => {
  const lines: string[] = [];
  await setupLogging({ level: "error", format: "text" }, { output: (l) => lines.push(l) });
  getLog("a").warning("hidden");
  await setupLogging({ level: "trace", format: "json" }, { output: (l) => lines.push(l) });
  getLog("a").trace("shown");
  assertEquals(lines.length, 1);
  assertEquals(JSON.parse(lines[0]).message, "shown");
});

Deno.test("log: text format", async () => {
  const lines: string[] = [];
  await setupLogging({ level: "debug", format: "text" }, { output: (l) => lines.push(l) });
  getLog("server.dispatcher").info("accepted {peer}", {
    peer: "[::1]:9",
    streams: 3,
    note: "two words",
    ok: true,
  });
  getLog("client").warning("multi\nline");
  assertEquals(lines.length, 2);
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)$/.exec(lines[0]);
  assert(m, lines[0]);
  assertEquals(
    m[2],
    'INFO  server.dispatcher  accepted [::1]:9 streams=3 note="two words" ok=true',
  );
  assert(lines[1].includes(" WARN  client  multi line"), lines[1]);
});

Deno.test("log: json format", async () => {
  const lines: string[] = [];
  await setupLogging({ level: "info", format: "json" }, { output: (l) => lines.push(l) });
  getLog("server").error("boom {n}", { n: 1, err: new TypeError("bad"), big: 10n });
  assertEquals(lines.length, 1);
  const o = JSON.parse(lines[0]);
  assertEquals(o.level, "error");
  assertEquals(o.category, "server");
  assertEquals(o.message, "boom 1");
  assertEquals(o.properties, { n: 1, err: "TypeError: bad", big: "10" });
  assert(!isNaN(Date.parse(o.time)));
});

Deno.test("log: secret-named properties are redacted in text, json and listeners", async () => {
  const key = new Uint8Array(32).fill(0x5a);
  const props = {
    key: SECRET,
    psk: SECRET,
    password: SECRET,
    token: SECRET,
    secret: SECRET,
    accessKey: SECRET,
    admin_token: SECRET,
    nested: { proxyPassword: SECRET, list: [{ clientSecret: SECRET }] },
    raw: key,
    keyFingerprint: "0a1b2c3d",
  };
  for (const format of ["text", "json"] as const) {
    const lines: string[] = [];
    const records: LogListenerRecord[] = [];
    await setupLogging({ level: "info", format }, { output: (l) => lines.push(l) });
    const off = addLogListener((r) => records.push(r));
    try {
      getLog("t").info("login with {password} and {key}", props);
      getLog("t").info({ ...props, message: "no template" });
      getLog("t").info`tagged ${key}`;
    } finally {
      off();
    }
    assertEquals(lines.length, 3);
    const all = lines.join("\n") + JSON.stringify(records);
    assert(!all.includes(SECRET), `${format}: secret leaked: ${all}`);
    assert(!all.includes("5a5a") && !all.includes("90,90"), `${format}: key bytes leaked`);
    assert(all.includes(REDACTED));
    assert(all.includes("0a1b2c3d"), "non-secret keyFingerprint is kept");
    assert(all.includes("<32 bytes>"));
    assertEquals(records[0].message, `login with ${REDACTED} and ${REDACTED}`);
    assertEquals(records[0].properties.accessKey, REDACTED);
    assertEquals(
      (records[0].properties.nested as { list: { clientSecret: string }[] }).list[0].clientSecret,
      REDACTED,
    );
    assertEquals(records[2].message, "tagged <32 bytes>");
  }
});

Deno.test("log: redact helpers", () => {
  assertEquals(redact("hunter2"), REDACTED);
  assertEquals(redact(new Uint8Array(32)), "[redacted 32 bytes]");
  for (const n of ["key", "psk", "password", "token", "secret", "accessKey", "api_token", "PSK"]) {
    assert(isSecretName(n), n);
  }
  for (const n of ["monkey", "keyFingerprint", "keyCount", "tokenBucket", "peer", "passwordless"]) {
    assert(!isSecretName(n), n);
  }
  const circular: Record<string, unknown> = { a: 1 };
  circular.self = circular;
  assertEquals(sanitizeLogValue(circular), { a: 1, self: "[circular]" });
  assertEquals(sanitizeLogValue({ m: new Map([["token", "x"]]) }), { m: { token: REDACTED } });
});

Deno.test("log: a level per category, most specific prefix wins", async () => {
  const lines: string[] = [];
  await setupLogging({
    level: "warning",
    format: "text",
    categories: { "server": "info", "server.dispatcher": "debug", "client": "error" },
  }, { output: (l) => lines.push(l) });
  getLog("server.dispatcher").debug("d-debug");
  getLog("server.relay").debug("r-debug");
  getLog("server.relay").info("r-info");
  getLog("client").warn("c-warn");
  getLog("client.proxy").error("c-error");
  getLog("misc").info("m-info");
  getLog("misc").warn("m-warn");
  const seen = (m: string) => lines.some((l) => l.includes(m));
  assert(seen("d-debug") && seen("r-info") && seen("c-error") && seen("m-warn"));
  assert(!seen("r-debug") && !seen("c-warn") && !seen("m-info"));
  assertEquals(
    levelFor({ level: "info", format: "text", categories: { a: "debug" } }, ["ostp", "a", "b"]),
    "debug",
  );
  await setupLogging({ level: "info", format: "text" }, { output: null });
});
