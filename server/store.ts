/**
 * Durable per-user counters in SQLite (`node:sqlite`), WAL mode with
 * `synchronous=NORMAL`: the server loads them at start and writes every
 * changed user's counters in one transaction per flush, so a crash loses at
 * most the counts since the last flush and never half of one.
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import type { UserCounters } from "./users.ts";

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
