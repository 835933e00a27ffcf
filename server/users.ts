/**
 * Users: every access key belongs to one user (entries of `keys` are
 * anonymous users named `key-1`, `key-2`, …), with optional limits — a
 * traffic allowance, an expiry date, an on/off switch — and counters that
 * outlive sessions and, with a state file, restarts (see `store.ts`).
 * @module
 */

import type { ServerConfig, UserConfig } from "../shared/config/types.ts";

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

/** Lowercase hex of a key. */
export function keyHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

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

  /** Counters of every current user, for the stats dump. */
  snapshot(): UserSnapshot[] {
    return this.list().map((u) => ({ name: u.name, ...u.counters }));
  }
}
