/**
 * Users: every access key belongs to one user (entries of `keys` are
 * anonymous users named `key-1`, `key-2`, …), with optional limits — a
 * traffic allowance, an expiry date, an on/off switch — and counters that
 * outlive sessions and, with a state file, restarts (see `store.ts`).
 * @module
 */

import type { ServerConfig, UserConfig } from "../shared/config/types.ts";
import { parseAccessKey, toHex } from "../shared/crypto/keys.ts";

/** Durable per-user counters. */
export interface UserCounters {
  /** Bytes client → targets (TCP and UDP payload). */
  bytesUp: number;
  /** Bytes targets → client (TCP and UDP payload). */
  bytesDown: number;
  /** Streams (TCP connections) opened. */
  streams: number;
  /** Sessions admitted. */
  sessions: number;
  /** Last activity, ms since the epoch; 0 for never. */
  lastSeen: number;
}

/** One user: its settings and its (live, shared) counters. */
export interface User {
  readonly name: string;
  /** The access key as lowercase hex (never logged). */
  readonly keyHex: string;
  limitBytes?: number;
  /** Expiry, ms since the epoch. */
  expires?: number;
  enabled: boolean;
  readonly counters: UserCounters;
}

/** A user's counters with its name, as dumped and stored. */
export type UserSnapshot = { name: string } & UserCounters;

/** Zeroed counters. */
export function newCounters(): UserCounters {
  return { bytesUp: 0, bytesDown: 0, streams: 0, sessions: 0, lastSeen: 0 };
}

/** Why `user` may not use the tunnel at `now` (ms since the epoch), or null if it may. */
export function allowed(
  user: Pick<User, "enabled" | "expires" | "limitBytes" | "counters">,
  now: number,
): string | null {
  if (!user.enabled) return "account disabled";
  if (user.expires !== undefined && now >= user.expires) return "account expired";
  if (
    user.limitBytes !== undefined &&
    user.counters.bytesUp + user.counters.bytesDown >= user.limitBytes
  ) return "traffic limit reached";
  return null;
}

/** Every user of a config: `keys` as anonymous unlimited users `key-N`, then `users`. */
export function usersOf(cfg: Pick<ServerConfig, "keys" | "users">): UserConfig[] {
  return [
    ...cfg.keys.map((key, i) => ({ name: `key-${i + 1}`, key, enabled: true })),
    ...(cfg.users ?? []),
  ];
}

/** Lowercase hex of a key (the map key for users). */
export const keyHex: (b: Uint8Array) => string = toHex;

/**
 * The users of a server by name and by key, with their counters. Counters of
 * a user removed by a reload are kept (and stored), so re-adding the name
 * continues them.
 */
export class UserRegistry {
  #byName = new Map<string, User>();
  #byKey = new Map<string, User>();
  readonly #counters = new Map<string, UserCounters>();
  readonly #dirty = new Set<string>();

  constructor(users: UserConfig[] = []) {
    this.update(users);
  }

  /** Replaces the user definitions; counters stay with the names. */
  update(users: UserConfig[]): void {
    this.#byName = new Map();
    this.#byKey = new Map();
    for (const u of users) {
      const user: User = {
        name: u.name,
        keyHex: keyHex(u.key),
        enabled: u.enabled,
        counters: this.counters(u.name),
      };
      if (u.limitBytes !== undefined) user.limitBytes = u.limitBytes;
      if (u.expires !== undefined) user.expires = u.expires;
      this.#byName.set(user.name, user);
      this.#byKey.set(user.keyHex, user);
    }
  }

  /** Adds counters loaded from the store (added to what is counted already). */
  load(rows: Iterable<[string, UserCounters]>): void {
    for (const [name, c] of rows) {
      const mine = this.counters(name);
      mine.bytesUp += c.bytesUp;
      mine.bytesDown += c.bytesDown;
      mine.streams += c.streams;
      mine.sessions += c.sessions;
      mine.lastSeen = Math.max(mine.lastSeen, c.lastSeen);
    }
  }

  /** The counters of `name` (created zeroed). */
  counters(name: string): UserCounters {
    let c = this.#counters.get(name);
    if (!c) this.#counters.set(name, c = newCounters());
    return c;
  }

  /** The user named `name`. */
  get(name: string): User | undefined {
    return this.#byName.get(name);
  }

  /** The user of a key given as lowercase hex. */
  byKey(hex: string): User | undefined {
    return this.#byKey.get(hex);
  }

  /** Current users, in config order. */
  list(): User[] {
    return [...this.#byName.values()];
  }

  /** Counts traffic; true if this made the user cross its limit. */
  addBytes(user: User, up: number, down: number, now: number = Date.now()): boolean {
    const c = user.counters;
    const before = c.bytesUp + c.bytesDown;
    c.bytesUp += up;
    c.bytesDown += down;
    c.lastSeen = now;
    this.#dirty.add(user.name);
    return user.limitBytes !== undefined && before < user.limitBytes &&
      before + up + down >= user.limitBytes;
  }

  /** Counts a stream opened. */
  addStream(user: User, now: number = Date.now()): void {
    user.counters.streams++;
    user.counters.lastSeen = now;
    this.#dirty.add(user.name);
  }

  /** Counts a session admitted. */
  addSession(user: User, now: number = Date.now()): void {
    user.counters.sessions++;
    user.counters.lastSeen = now;
    this.#dirty.add(user.name);
  }

  /** Counters changed since the last call (copies); clears the changed set. */
  takeDirty(): [string, UserCounters][] {
    const out: [string, UserCounters][] = [];
    for (const name of this.#dirty) out.push([name, { ...this.counters(name) }]);
    this.#dirty.clear();
    return out;
  }

  /** Marks names changed again (after a failed flush). */
  markDirty(names: Iterable<string>): void {
    for (const n of names) this.#dirty.add(n);
  }

  /** Zeroes the counters of `name` (kept as the same object) and marks them changed. */
  reset(name: string): void {
    Object.assign(this.counters(name), newCounters());
    this.#dirty.add(name);
  }

  /** Drops the counters of `name` (a deleted user): a new user of that name starts at zero. */
  forget(name: string): void {
    this.#counters.delete(name);
    this.#dirty.delete(name);
  }

  /** Counters of every current user, for the stats dump. */
  snapshot(): UserSnapshot[] {
    return this.list().map((u) => ({ name: u.name, ...u.counters }));
  }
}

/** A user created through the management API (or loaded from the store). */
export type ApiUserConfig = UserConfig;

/** The fields of `POST /api/v1/users`, validated. */
export interface NewUserInput {
  name: string;
  /** Absent: the server generates one. */
  key?: Uint8Array;
  limitBytes?: number;
  expires?: number;
  enabled: boolean;
}

/** The fields of `PATCH /api/v1/users/:name`, validated; `null` clears. */
export interface UserPatch {
  limitBytes?: number | null;
  expires?: number | null;
  enabled?: boolean;
}

/** A request body that fails validation: `message` names the field. */
export class UserInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UserInputError";
  }
}

/** User names the config accepts. */
export const USER_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
const ISO_DATE_RE =
  /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

/** Why `name` is not a valid name for a new user, or null. */
export function checkUserName(name: unknown): string | null {
  if (typeof name !== "string" || !USER_NAME_RE.test(name)) {
    return "name: expected 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'";
  }
  if (/^key-\d+$/.test(name)) return 'name: names "key-N" are reserved for the entries of keys';
  return null;
}

function typeOf(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

function asObject(body: unknown, fields: readonly string[]): Record<string, unknown> {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new UserInputError("expected a JSON object");
  }
  const o = body as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!fields.includes(k)) {
      throw new UserInputError(
        `${k.length > 40 ? k.slice(0, 40) + "…" : k}: unknown field (expected ${
          fields.join(", ")
        })`,
      );
    }
  }
  return o;
}

function readLimit(v: unknown): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) {
    throw new UserInputError("limitBytes: expected a positive integer (bytes up + down)");
  }
  return v;
}

function readExpires(v: unknown): number {
  const t = typeof v === "string" && ISO_DATE_RE.test(v) ? Date.parse(v) : NaN;
  if (Number.isNaN(t)) {
    throw new UserInputError(
      'expires: expected an ISO-8601 date or date-time ("2030-01-31T00:00:00Z")',
    );
  }
  return t;
}

function readEnabled(v: unknown): boolean {
  if (typeof v !== "boolean") {
    throw new UserInputError(`enabled: expected true or false, got ${typeOf(v)}`);
  }
  return v;
}

/**
 * Validates the body of `POST /api/v1/users` (uniqueness is the caller's
 * check). `key` is 64 hex digits or 43 base64url characters.
 * @throws {UserInputError} naming the field.
 */
export function parseNewUser(body: unknown): NewUserInput {
  const o = asObject(body, ["name", "key", "limitBytes", "expires", "enabled"]);
  if (o.name === undefined) throw new UserInputError("name: required");
  const bad = checkUserName(o.name);
  if (bad) throw new UserInputError(bad);
  const out: NewUserInput = { name: o.name as string, enabled: true };
  if (o.key !== undefined && o.key !== null) {
    if (typeof o.key !== "string") {
      throw new UserInputError(`key: expected a string, got ${typeOf(o.key)}`);
    }
    try {
      out.key = parseAccessKey(o.key);
    } catch {
      throw new UserInputError(
        "key: expected 32 bytes as 64 hex digits or 43 base64url characters",
      );
    }
  }
  if (o.limitBytes !== undefined && o.limitBytes !== null) out.limitBytes = readLimit(o.limitBytes);
  if (o.expires !== undefined && o.expires !== null) out.expires = readExpires(o.expires);
  if (o.enabled !== undefined) out.enabled = readEnabled(o.enabled);
  return out;
}

/**
 * Validates the body of `PATCH /api/v1/users/:name`.
 * @throws {UserInputError} naming the field.
 */
export function parseUserPatch(body: unknown): UserPatch {
  const o = asObject(body, ["limitBytes", "expires", "enabled"]);
  const out: UserPatch = {};
  if (o.limitBytes !== undefined) {
    out.limitBytes = o.limitBytes === null ? null : readLimit(o.limitBytes);
  }
  if (o.expires !== undefined) out.expires = o.expires === null ? null : readExpires(o.expires);
  if (o.enabled !== undefined) out.enabled = readEnabled(o.enabled);
  return out;
}
