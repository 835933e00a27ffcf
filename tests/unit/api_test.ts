import { assert, assertEquals } from "../support/assert.ts";
import { type ApiBackend, ApiError, ApiServer, handleApi } from "../../server/api.ts";
import { OstpServer } from "../../server/server.ts";
import { CounterStore } from "../../server/store.ts";
import { parseNewUser, parseUserPatch, UserInputError } from "../../server/users.ts";
import { parseServerConfig } from "../../shared/config/server_config.ts";
import { decodeShareLink } from "../../shared/link.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

const TOKEN = "t0k3n-for-tests-0123456789";
const opts = { hostname: "127.0.0.1", port: 0, token: TOKEN, maxBodyBytes: 1024 };

function backend(): ApiBackend & { kicked: [string, string][] } {
  const kicked: [string, string][] = [];
  return {
    kicked,
    status: () => ({ version: "0.1.0", sessions: 1 }),
    sessions: () => [{
      id: "0000abcd",
      user: "alice",
      address: "127.0.0.1:5000",
      rttMs: 1.5,
      bytesSent: 10,
      bytesReceived: 20,
      streams: 1,
      ageSeconds: 3,
      worker: 0,
    }],
    kick: (id, reason) => {
      if (id !== "0000abcd") return false;
      kicked.push([id, reason]);
      return true;
    },
    metrics: () => "# TYPE ostp_sessions gauge\nostp_sessions 1\n",
    listUsers: () => [],
    getUser: () => undefined,
    createUser: () => {
      throw new ApiError(500, "not here");
    },
    updateUser: (name) => {
      throw new ApiError(404, `no user ${name}`);
    },
    deleteUser: (name) => {
      throw new ApiError(404, `no user ${name}`);
    },
    resetUser: (name) => {
      throw new ApiError(404, `no user ${name}`);
    },
    userLink: (name) => {
      throw new ApiError(404, `no user ${name}`);
    },
  };
}

function req(method: string, path: string, init: { token?: string | null; body?: string } = {}) {
  const headers: Record<string, string> = {};
  if (init.token !== null) headers.authorization = `Bearer ${init.token ?? TOKEN}`;
  return new Request(`http://api${path}`, { method, headers, body: init.body });
}

Deno.test("api: bearer token required and checked", async () => {
  const b = backend();
  for (const token of [null, "wrong", TOKEN + "x", ""]) {
    const r = await handleApi(req("GET", "/api/v1/status", { token }), b, opts);
    assertEquals(r.status, 401, `token ${token}`);
    assertEquals((await r.json()).error, "missing or wrong bearer token");
  }
  const ok = await handleApi(req("GET", "/api/v1/status"), b, opts);
  assertEquals(ok.status, 200);
  assertEquals(await ok.json(), { version: "0.1.0", sessions: 1 });
});

Deno.test("api: sessions, kick, errors", async () => {
  const b = backend();
  const list = await handleApi(req("GET", "/api/v1/sessions"), b, opts);
  assertEquals((await list.json()).sessions[0].user, "alice");
  const kick = await handleApi(
    req("DELETE", "/api/v1/sessions/abcd", { body: '{"reason":"bye"}' }),
    b,
    opts,
  );
  assertEquals(kick.status, 200);
  assertEquals(b.kicked, [["0000abcd", "bye"]]);
  const plain = await handleApi(req("DELETE", "/api/v1/sessions/0000abcd"), b, opts);
  assertEquals(plain.status, 200);
  assertEquals(b.kicked[1][1], "kicked by the operator");
  const unknown = await handleApi(req("DELETE", "/api/v1/sessions/ffff"), b, opts);
  assertEquals(unknown.status, 404);
  const bad = await handleApi(req("DELETE", "/api/v1/sessions/abcd", { body: "{nope" }), b, opts);
  assertEquals(bad.status, 400);
  assertEquals((await bad.json()).error, "malformed JSON");
  const wrongType = await handleApi(
    req("DELETE", "/api/v1/sessions/abcd", { body: '{"reason":5}' }),
    b,
    opts,
  );
  assertEquals(wrongType.status, 400);
  const big = await handleApi(
    req("DELETE", "/api/v1/sessions/abcd", { body: JSON.stringify({ reason: "x".repeat(5000) }) }),
    b,
    opts,
  );
  assertEquals(big.status, 413);
  assertEquals((await handleApi(req("POST", "/api/v1/sessions"), b, opts)).status, 405);
  assertEquals((await handleApi(req("GET", "/api/v1/nothing"), b, opts)).status, 404);
});

Deno.test("api: Prometheus metrics over a real listener", async () => {
  const server = new ApiServer(backend(), opts);
  const addr = server.start();
  try {
    const r = await fetch(`http://127.0.0.1:${addr.port}/metrics`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assertEquals(r.status, 200);
    assert(r.headers.get("content-type")!.startsWith("text/plain; version=0.0.4"));
    assert((await r.text()).includes("ostp_sessions 1"));
    const denied = await fetch(`http://127.0.0.1:${addr.port}/metrics`);
    assertEquals(denied.status, 401);
    await denied.body?.cancel();
  } finally {
    await server.stop();
  }
});

Deno.test("api: refuses short tokens", () => {
  let threw = false;
  try {
    new ApiServer(backend(), { ...opts, token: "short" });
  } catch {
    threw = true;
  }
  assert(threw);
});

function fieldError(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert(e instanceof UserInputError, String(e));
    return e.message;
  }
  throw new Error("expected a UserInputError");
}

Deno.test("api users: body validation names the field", () => {
  const key = generateAccessKey();
  assertEquals(parseNewUser({ name: "bob" }), { name: "bob", enabled: true });
  const full = parseNewUser({
    name: "a.b_c-1",
    key: formatAccessKey(key, "hex"),
    limitBytes: 1000,
    expires: "2030-01-31",
    enabled: false,
  });
  assertEquals(full.key, key);
  assertEquals(full.limitBytes, 1000);
  assertEquals(full.expires, Date.parse("2030-01-31"));
  assertEquals(full.enabled, false);
  assertEquals(parseNewUser({ name: "x", key: formatAccessKey(key, "base64url") }).key, key);
  assertEquals(fieldError(() => parseNewUser(null)), "expected a JSON object");
  assertEquals(fieldError(() => parseNewUser([])), "expected a JSON object");
  assertEquals(fieldError(() => parseNewUser({})), "name: required");
  for (const name of ["", "a b", "x".repeat(65), "é", 5]) {
    assert(fieldError(() => parseNewUser({ name })).startsWith("name: expected 1 to 64"));
  }
  assert(fieldError(() => parseNewUser({ name: "key-3" })).includes("reserved"));
  assert(fieldError(() => parseNewUser({ name: "a", key: "abc" })).startsWith("key: "));
  assert(fieldError(() => parseNewUser({ name: "a", key: 7 })).startsWith("key: "));
  for (const limitBytes of [0, -1, 1.5, "10", 2 ** 60]) {
    assert(fieldError(() => parseNewUser({ name: "a", limitBytes })).startsWith("limitBytes: "));
  }
  for (const expires of ["tomorrow", "2030-13-45", 123]) {
    assert(fieldError(() => parseNewUser({ name: "a", expires })).startsWith("expires: "));
  }
  assert(fieldError(() => parseNewUser({ name: "a", enabled: "yes" })).startsWith("enabled: "));
  assert(fieldError(() => parseNewUser({ name: "a", extra: 1 })).startsWith("extra: unknown"));
  assertEquals(parseUserPatch({}), {});
  assertEquals(parseUserPatch({ limitBytes: null, expires: null, enabled: true }), {
    limitBytes: null,
    expires: null,
    enabled: true,
  });
  assertEquals(parseUserPatch({ limitBytes: 5 }), { limitBytes: 5 });
  assert(fieldError(() => parseUserPatch({ enabled: null })).startsWith("enabled: "));
  assert(fieldError(() => parseUserPatch({ name: "x" })).startsWith("name: unknown"));
  assert(fieldError(() => parseUserPatch({ limitBytes: 0 })).startsWith("limitBytes: "));
});

function serverWith(extra: Record<string, unknown> = {}) {
  const aliceKey = generateAccessKey();
  const config = parseServerConfig({
    listen: ["0.0.0.0:4433"],
    users: [{ name: "alice", key: formatAccessKey(aliceKey, "hex") }],
    ...extra,
  });
  return { server: new OstpServer(config), aliceKey };
}

Deno.test("api users: create, get, patch, reset, link, delete on an unstarted server", async () => {
  const { server, aliceKey } = serverWith();
  const b = server.apiBackend();
  const call = async (method: string, path: string, body?: unknown) => {
    const r = await handleApi(
      req(method, path, { body: body === undefined ? undefined : JSON.stringify(body) }),
      b,
      opts,
    );
    return { status: r.status, json: await r.json() };
  };
  const list = await call("GET", "/api/v1/users");
  assertEquals(list.json.users.map((u: { name: string }) => u.name), ["alice"]);
  assertEquals(list.json.users[0].source, "config");
  assert(!JSON.stringify(list.json).includes(formatAccessKey(aliceKey, "hex")), "no keys");

  const created = await call("POST", "/api/v1/users", { name: "bob", limitBytes: 1000 });
  assertEquals(created.status, 201);
  assert(/^[0-9a-f]{64}$/.test(created.json.key));
  const link = decodeShareLink(created.json.link);
  assertEquals(formatAccessKey(link.key, "hex"), created.json.key);
  assertEquals(link.server, { host: "127.0.0.1", port: 4433 });
  assertEquals(link.name, "bob");
  assertEquals(created.json.user.source, "api");
  assertEquals(created.json.user.limitBytes, 1000);
  assertEquals(server.users.byKey(created.json.key)?.name, "bob");
  assertEquals(server.dispatcher.keyCount, 2);

  const got = await call("GET", "/api/v1/users/bob");
  assertEquals(got.status, 200);
  assertEquals(got.json.key, undefined);
  assertEquals((await call("GET", "/api/v1/users/bob/link")).json.link, created.json.link);

  const patched = await call("PATCH", "/api/v1/users/bob", {
    limitBytes: null,
    expires: "2030-01-31T00:00:00Z",
    enabled: false,
  });
  assertEquals(patched.status, 200);
  assertEquals(patched.json.limitBytes, null);
  assertEquals(patched.json.expires, "2030-01-31T00:00:00.000Z");
  assertEquals(patched.json.enabled, false);
  assertEquals(patched.json.blocked, "account disabled");

  server.users.addBytes(server.users.get("bob")!, 10, 20);
  const reset = await call("POST", "/api/v1/users/bob/reset");
  assertEquals([reset.json.bytesUp, reset.json.bytesDown], [0, 0]);
  assertEquals((await call("POST", "/api/v1/users/alice/reset")).status, 200);

  // Errors.
  assertEquals((await call("POST", "/api/v1/users", { name: "bob" })).status, 409);
  assertEquals((await call("POST", "/api/v1/users", { name: "alice" })).status, 409);
  const dupKey = await call("POST", "/api/v1/users", {
    name: "carol",
    key: formatAccessKey(aliceKey, "base64url"),
  });
  assertEquals(dupKey.status, 409);
  assert(dupKey.json.error.startsWith("key: "));
  const bad = await call("POST", "/api/v1/users", { name: "no spaces" });
  assertEquals(bad.status, 400);
  assert(bad.json.error.startsWith("name: "));
  const cfg = await call("PATCH", "/api/v1/users/alice", { enabled: false });
  assertEquals(cfg.status, 409);
  assertEquals(cfg.json.error, "user alice is defined in the config file; edit it there");
  assertEquals((await call("DELETE", "/api/v1/users/alice")).status, 409);
  assertEquals((await call("GET", "/api/v1/users/nobody")).status, 404);
  assertEquals((await call("PATCH", "/api/v1/users/nobody", {})).status, 404);
  assertEquals((await call("GET", "/api/v1/users/nobody/link")).status, 404);
  assertEquals((await call("PUT", "/api/v1/users/bob")).status, 405);
  assertEquals((await call("GET", "/api/v1/users/bob/reset")).status, 405);
  const malformed = await handleApi(req("POST", "/api/v1/users", { body: "{nope" }), b, opts);
  assertEquals(malformed.status, 400);
  assertEquals((await malformed.json()).error, "malformed JSON");

  const del = await call("DELETE", "/api/v1/users/bob");
  assertEquals(del.json, { deleted: "bob", kickedSessions: 0 });
  assertEquals((await call("GET", "/api/v1/users/bob")).status, 404);
  assertEquals(server.dispatcher.keyCount, 1);
  await server.stop();
});

Deno.test("api users: publicAddress goes into links", async () => {
  const { server } = serverWith({ publicAddress: "vpn.example.com:443" });
  const r = server.apiBackend().createUser({ name: "dave", enabled: true });
  assertEquals(decodeShareLink(r.link).server, { host: "vpn.example.com", port: 443 });
  await server.stop();
});

Deno.test("store: API users round-trip and delete with their counters", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const key = generateAccessKey();
    let s = new CounterStore(`${dir}/state.db`);
    s.putUser({ name: "bob", key, enabled: true, limitBytes: 5, expires: 1000 });
    s.putUser({ name: "eve", key: generateAccessKey(), enabled: false });
    s.putUser({ name: "bob", key, enabled: false });
    s.save([["bob", { bytesUp: 1, bytesDown: 2, streams: 3, sessions: 4, lastSeen: 5 }]]);
    s.close();
    s = new CounterStore(`${dir}/state.db`);
    const users = s.loadUsers();
    assertEquals(users.map((u) => u.name), ["bob", "eve"]);
    assertEquals(users[0], { name: "bob", key, enabled: false });
    assertEquals(users[1].enabled, false);
    s.deleteUser("bob");
    assertEquals(s.loadUsers().map((u) => u.name), ["eve"]);
    assertEquals(s.load().has("bob"), false);
    s.close();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
