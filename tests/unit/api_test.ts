import { assert, assertEquals } from "../support/assert.ts";
import { type ApiBackend, ApiServer, handleApi } from "../../server/api.ts";

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
    }],
    kick: (id, reason) => {
      if (id !== "0000abcd") return false;
      kicked.push([id, reason]);
      return true;
    },
    metrics: () => "# TYPE ostp_sessions gauge\nostp_sessions 1\n",
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
