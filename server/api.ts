/**
 * The management API: an HTTP listener (loopback by default) for panels and
 * scripts. A bearer token is required and compared in constant time; bodies
 * are JSON, errors carry a status code and a message.
 *
 * Endpoints (docs/api.md): `GET /api/v1/status`, `GET /api/v1/sessions`,
 * `DELETE /api/v1/sessions/:id` (kick), `GET /metrics` (Prometheus text),
 * and the users: `GET|POST /api/v1/users`, `GET|PATCH|DELETE
 * /api/v1/users/:name`, `POST /api/v1/users/:name/reset`,
 * `GET /api/v1/users/:name/link`.
 * @module
 */

import { timingSafeEqual } from "node:crypto";
import {
  type NewUserInput,
  parseNewUser,
  parseUserPatch,
  UserInputError,
  type UserPatch,
} from "./users.ts";

/** One live session as the API shows it. */
export interface SessionView {
  /** Session id, 8 hex digits. */
  id: string;
  /** Owner (user name, or key-N for anonymous keys). */
  user: string;
  /** Client address as host:port. */
  address: string;
  /** Smoothed RTT, ms. */
  rttMs: number;
  bytesSent: number;
  bytesReceived: number;
  streams: number;
  /** Seconds since the handshake. */
  ageSeconds: number;
  /** The worker thread serving it (docs/workers.md); 0 with one worker. */
  worker: number;
}

/** One user as the API shows it (never its key). */
export interface UserView {
  name: string;
  /** Where the user is defined: the config file (read-only here) or the API. */
  source: "config" | "api";
  enabled: boolean;
  /** Traffic allowance in bytes (up + down), or null for none. */
  limitBytes: number | null;
  /** Expiry as ISO-8601, or null for none. */
  expires: string | null;
  /** Why the user is refused now ("account disabled", …), or null. */
  blocked: string | null;
  bytesUp: number;
  bytesDown: number;
  streams: number;
  sessions: number;
  /** Last activity as ISO-8601, or null for never. */
  lastSeen: string | null;
  /** Live sessions of the user. */
  liveSessions: number;
}

/** A created user: its view, its key (hex, shown this once) and its share link. */
export interface CreatedUser {
  user: UserView;
  key: string;
  link: string;
}

/** An error with an HTTP status, thrown by backends. */
export class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = "ApiError";
  }
}

/**
 * What the API needs from the server. The reads may answer with a promise (a
 * server with worker threads first gathers fresh counters from them).
 */
export interface ApiBackend {
  /** Version, uptime, sessions, users, bytes, drops by reason. */
  status(): Record<string, unknown> | Promise<Record<string, unknown>>;
  /** Live sessions. */
  sessions(): SessionView[] | Promise<SessionView[]>;
  /** Closes a session with a reason; false if there is none with that id. */
  kick(id: string, reason: string): boolean | Promise<boolean>;
  /** Prometheus text exposition. */
  metrics(): string | Promise<string>;
  /** Every user (config and API). */
  listUsers(): UserView[] | Promise<UserView[]>;
  /** One user, or undefined. */
  getUser(name: string): UserView | undefined | Promise<UserView | undefined>;
  /** Creates an API user; throws ApiError (409 duplicate). */
  createUser(input: NewUserInput): CreatedUser;
  /** Changes an API user; throws ApiError (404, 409 for config users). */
  updateUser(name: string, patch: UserPatch): UserView;
  /** Deletes an API user, kicking its sessions; throws ApiError (404, 409). */
  deleteUser(name: string): { deleted: string; kickedSessions: number };
  /** Zeroes a user's counters; throws ApiError (404). */
  resetUser(name: string): UserView;
  /** A user's share link; throws ApiError (404). */
  userLink(name: string): string;
}

/** Settings of the API listener. */
export interface ApiOptions {
  hostname: string;
  port: number;
  /** Bearer token; required. */
  token: string;
  /** Largest accepted request body, bytes (default 64 KiB). */
  maxBodyBytes?: number;
}

/** A JSON error reply. */
function error(status: number, message: string): Response {
  return Response.json({ error: message }, { status });
}

const enc = new TextEncoder();

/** Constant-time token check (lengths leak nothing useful: both are hashed first). */
async function tokenMatches(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", enc.encode(given)),
    crypto.subtle.digest("SHA-256", enc.encode(expected)),
  ]);
  return timingSafeEqual(new Uint8Array(a), new Uint8Array(b));
}

/** Reads a JSON body with a size bound; returns a Response on error. */
export async function readJson(req: Request, max: number): Promise<unknown | Response> {
  const len = Number(req.headers.get("content-length") ?? "0");
  if (len > max) return error(413, `body larger than ${max} bytes`);
  const reader = req.body?.getReader();
  if (!reader) return null;
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > max) {
      await reader.cancel();
      return error(413, `body larger than ${max} bytes`);
    }
    chunks.push(value);
  }
  if (total === 0) return null;
  const all = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    all.set(c, o);
    o += c.length;
  }
  try {
    return JSON.parse(new TextDecoder().decode(all));
  } catch {
    return error(400, "malformed JSON");
  }
}

/** Routes one request; exported for tests without a socket. */
export async function handleApi(
  req: Request,
  backend: ApiBackend,
  opts: ApiOptions,
): Promise<Response> {
  const auth = req.headers.get("authorization") ?? "";
  const m = /^Bearer\s+(\S+)$/i.exec(auth);
  if (!m || !(await tokenMatches(m[1], opts.token))) {
    return new Response(JSON.stringify({ error: "missing or wrong bearer token" }), {
      status: 401,
      headers: { "content-type": "application/json", "www-authenticate": 'Bearer realm="ostp"' },
    });
  }
  const url = new URL(req.url);
  const path = url.pathname.replace(/\/+$/, "") || "/";
  const method = req.method;
  const max = opts.maxBodyBytes ?? 64 * 1024;
  if (path === "/metrics") {
    if (method !== "GET") return error(405, "use GET");
    return new Response(await backend.metrics(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  }
  if (path === "/api/v1/status") {
    if (method !== "GET") return error(405, "use GET");
    return Response.json(await backend.status());
  }
  if (path === "/api/v1/sessions") {
    if (method !== "GET") return error(405, "use GET");
    return Response.json({ sessions: await backend.sessions() });
  }
  const s = /^\/api\/v1\/sessions\/([0-9a-fA-F]{1,8})$/.exec(path);
  if (s) {
    if (method !== "DELETE") return error(405, "use DELETE to kick a session");
    const body = await readJson(req, max);
    if (body instanceof Response) return body;
    let reason = "kicked by the operator";
    if (body !== null) {
      if (typeof body !== "object" || Array.isArray(body)) {
        return error(400, "expected a JSON object");
      }
      const r = (body as Record<string, unknown>).reason;
      if (r !== undefined && (typeof r !== "string" || r.length > 200)) {
        return error(400, "reason: expected a string of at most 200 characters");
      }
      if (typeof r === "string") reason = r;
    }
    const id = s[1].toLowerCase().padStart(8, "0");
    if (!(await backend.kick(id, reason))) return error(404, `no session ${id}`);
    return Response.json({ kicked: id, reason });
  }
  if (path === "/api/v1/users" || path.startsWith("/api/v1/users/")) {
    try {
      return await handleUsers(req, path, backend, max);
    } catch (e) {
      if (e instanceof ApiError) return error(e.status, e.message);
      if (e instanceof UserInputError) return error(400, e.message);
      throw e;
    }
  }
  return error(404, `no endpoint ${method} ${path}`);
}

/** The user endpoints. */
async function handleUsers(
  req: Request,
  path: string,
  backend: ApiBackend,
  max: number,
): Promise<Response> {
  const method = req.method;
  const body = async () => {
    const b = await readJson(req, max);
    if (b instanceof Response) throw b;
    return b;
  };
  try {
    if (path === "/api/v1/users") {
      if (method === "GET") return Response.json({ users: await backend.listUsers() });
      if (method === "POST") {
        return Response.json(backend.createUser(parseNewUser(await body())), { status: 201 });
      }
      return error(405, "use GET or POST");
    }
    const m = /^\/api\/v1\/users\/([^/]+)(?:\/(reset|link))?$/.exec(path);
    if (!m) return error(404, `no endpoint ${method} ${path}`);
    let name: string;
    try {
      name = decodeURIComponent(m[1]);
    } catch {
      return error(400, "user name is not valid percent-encoding");
    }
    if (m[2] === "reset") {
      if (method !== "POST") return error(405, "use POST");
      return Response.json(backend.resetUser(name));
    }
    if (m[2] === "link") {
      if (method !== "GET") return error(405, "use GET");
      return Response.json({ name, link: backend.userLink(name) });
    }
    if (method === "GET") {
      const u = await backend.getUser(name);
      return u ? Response.json(u) : error(404, `no user ${name}`);
    }
    if (method === "PATCH") {
      return Response.json(backend.updateUser(name, parseUserPatch(await body())));
    }
    if (method === "DELETE") return Response.json(backend.deleteUser(name));
    return error(405, "use GET, PATCH or DELETE");
  } catch (e) {
    if (e instanceof Response) return e;
    throw e;
  }
}

/** A running API listener. */
export class ApiServer {
  private server: Deno.HttpServer<Deno.NetAddr> | null = null;

  constructor(private readonly backend: ApiBackend, private readonly opts: ApiOptions) {
    if (opts.token.length < 16) throw new Error("api token must be at least 16 characters");
  }

  /** Starts listening; returns the bound address. */
  start(): Deno.NetAddr {
    this.server = Deno.serve(
      { hostname: this.opts.hostname, port: this.opts.port, onListen: () => {} },
      (req) => handleApi(req, this.backend, this.opts).catch(() => error(500, "internal error")),
    );
    return this.server.addr;
  }

  /** Stops the listener. */
  async stop(): Promise<void> {
    await this.server?.shutdown();
    this.server = null;
  }
}
