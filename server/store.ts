/**
 * Durable per-user counters in SQLite (`node:sqlite`), WAL mode with
 * `synchronous=NORMAL`: the server loads them at start and writes every
 * changed user's counters in one transaction per flush, so a crash loses at
 * most the counts since the last flush and never half of one.
 *
 * A second table, `api_users`, holds the users created through the
 * management API (name, key, limit, expiry, enabled); each change is written
 * at once in its own transaction.
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import type { ApiUserConfig, UserCounters } from "./users.ts";
import { keyHex } from "./users.ts";
import { parseAccessKey } from "../shared/crypto/keys.ts";

/** A counters database file. */
export class CounterStore {
  readonly #db: DatabaseSync;
  #closed = false;

  /** Opens (creating if needed) the database at `path`. */
  constructor(readonly path: string) {
    this.#db = new DatabaseSync(path);
    this.#db.exec("PRAGMA journal_mode=WAL");
    this.#db.exec("PRAGMA synchronous=NORMAL");
    this.#db.exec(`CREATE TABLE IF NOT EXISTS user_counters (
      name TEXT PRIMARY KEY NOT NULL,
      bytes_up INTEGER NOT NULL CHECK (bytes_up >= 0),
      bytes_down INTEGER NOT NULL CHECK (bytes_down >= 0),
      streams INTEGER NOT NULL CHECK (streams >= 0),
      sessions INTEGER NOT NULL CHECK (sessions >= 0),
      last_seen INTEGER NOT NULL
    )`);
    this.#db.exec(`CREATE TABLE IF NOT EXISTS api_users (
      name TEXT PRIMARY KEY NOT NULL,
      key TEXT NOT NULL UNIQUE,
      limit_bytes INTEGER CHECK (limit_bytes IS NULL OR limit_bytes > 0),
      expires INTEGER,
      enabled INTEGER NOT NULL CHECK (enabled IN (0, 1))
    )`);
  }

  /** The users created through the API, in creation order. */
  loadUsers(): ApiUserConfig[] {
    const rows = this.#db.prepare(
      "SELECT name, key, limit_bytes, expires, enabled FROM api_users ORDER BY rowid",
    ).all() as Record<string, number | string | null>[];
    return rows.map((r) => {
      const u: ApiUserConfig = {
        name: String(r.name),
        key: parseAccessKey(String(r.key)),
        enabled: Number(r.enabled) === 1,
      };
      if (r.limit_bytes !== null) u.limitBytes = Number(r.limit_bytes);
      if (r.expires !== null) u.expires = Number(r.expires);
      return u;
    });
  }

  /** Inserts or updates an API user. */
  putUser(u: ApiUserConfig): void {
    this.#db.prepare(
      `INSERT INTO api_users (name, key, limit_bytes, expires, enabled) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT(name) DO UPDATE SET key = excluded.key, limit_bytes = excluded.limit_bytes,
         expires = excluded.expires, enabled = excluded.enabled`,
    ).run(u.name, keyHex(u.key), u.limitBytes ?? null, u.expires ?? null, u.enabled ? 1 : 0);
  }

  /** Deletes an API user and its counters in one transaction. */
  deleteUser(name: string): void {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      this.#db.prepare("DELETE FROM api_users WHERE name = ?").run(name);
      this.#db.prepare("DELETE FROM user_counters WHERE name = ?").run(name);
      this.#db.exec("COMMIT");
    } catch (e) {
      this.#db.exec("ROLLBACK");
      throw e;
    }
  }

  /** Every stored user's counters. */
  load(): Map<string, UserCounters> {
    const rows = this.#db.prepare(
      "SELECT name, bytes_up, bytes_down, streams, sessions, last_seen FROM user_counters",
    ).all() as Record<string, number | string>[];
    const out = new Map<string, UserCounters>();
    for (const r of rows) {
      out.set(String(r.name), {
        bytesUp: Number(r.bytes_up),
        bytesDown: Number(r.bytes_down),
        streams: Number(r.streams),
        sessions: Number(r.sessions),
        lastSeen: Number(r.last_seen),
      });
    }
    return out;
  }

  /** Writes the given counters (absolute values) in one transaction: all or nothing. */
  save(rows: Iterable<[string, UserCounters]>): void {
    const stmt = this.#db.prepare(
      `INSERT INTO user_counters (name, bytes_up, bytes_down, streams, sessions, last_seen)
       VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT(name) DO UPDATE SET bytes_up = excluded.bytes_up,
         bytes_down = excluded.bytes_down, streams = excluded.streams,
         sessions = excluded.sessions, last_seen = excluded.last_seen`,
    );
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      for (const [name, c] of rows) {
        stmt.run(name, c.bytesUp, c.bytesDown, c.streams, c.sessions, c.lastSeen);
      }
      this.#db.exec("COMMIT");
    } catch (e) {
      this.#db.exec("ROLLBACK");
      throw e;
    }
  }

  /** Closes the database. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }
}
