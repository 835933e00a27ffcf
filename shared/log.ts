/**
 * Structured logging on LogTape (DESIGN.md principle 8).
 *
 * Every logger lives under the root category `ostp` ({@link getLog}).
 * {@link setupLogging} writes records to stderr as text for people
 * (`2026-11-27T10:00:00.000Z INFO  server.dispatcher  message key=value`) or
 * as JSON lines for machines, and hands them to listeners an embedding
 * program registered with {@link addLogListener}.
 *
 * Secrets never reach any output (principle 6): properties named like a
 * secret (`key`, `psk`, `password`, `token`, `secret`, also as the last word
 * of a name: `accessKey`, `admin_token`) are replaced by `[redacted]`, also
 * where the message template interpolates them, and byte arrays are shown as
 * their length only.
 * @module
 */

import { configure, getLogger, type Logger, type LogRecord, type Sink } from "@logtape/logtape";
import type { LogConfig } from "./config/types.ts";

export type { Logger } from "@logtape/logtape";

/** Root category of every ostp logger. */
export const ROOT_CATEGORY = "ostp";
/** What a redacted value is replaced by. */
export const REDACTED = "[redacted]";

/** A log record as handed to {@link addLogListener} listeners (already redacted). */
export interface LogListenerRecord {
  /** LogTape level: `trace`, `debug`, `info`, `warning`, `error` or `fatal`. */
  level: string;
  /** Category below the root, dot-separated (`server.dispatcher`). */
  category: string;
  /** The rendered message. */
  message: string;
  /** The record's properties, redacted and made JSON-safe. */
  properties: Record<string, unknown>;
  /** Milliseconds since the Unix epoch. */
  timestamp: number;
}

/** A subscriber to log records. */
export type LogListener = (record: LogListenerRecord) => void;

/** Options of {@link setupLogging}. */
export interface LogOutputOptions {
  /**
   * Where formatted lines go (each without its newline): stderr when omitted,
   * nowhere when `null` (an embedding program that only listens).
   */
  output?: ((line: string) => void) | null;
}

// ---------------------------------------------------------------------------
// Redaction

const SECRET_WORDS = new Set([
  "key",
  "keys",
  "psk",
  "password",
  "passwd",
  "passphrase",
  "token",
  "secret",
  "secrets",
  "credential",
  "credentials",
]);

/**
 * True if a property name denotes a secret: its last word (split at `_`,
 * `-`, `.` and camelCase humps) is key, psk, password, token, secret or alike.
 * `accessKey` and `admin_token` are secret; `keyFingerprint` and `monkey` are not.
 */
export function isSecretName(name: string): boolean {
  const words = name.replace(/([a-z0-9])([A-Z])/g, "$1 $2").split(/[\s_.\-]+/).filter(Boolean);
  const last = words[words.length - 1];
  return last !== undefined && SECRET_WORDS.has(last.toLowerCase());
}

/**
 * Hides a secret value for logging: `[redacted]`, or `[redacted N bytes]` for
 * binary (the length of a key is no secret; a password's length would be).
 * Use it when a property's name does not say that its value is secret.
 */
export function redact(value: unknown): string {
  if (value instanceof Uint8Array || value instanceof ArrayBuffer) {
    return `${REDACTED.slice(0, -1)} ${value.byteLength} bytes]`;
  }
  return REDACTED;
}

const MAX_DEPTH = 6;
const MAX_ITEMS = 100;
const MAX_STRING = 4096;

/**
 * A JSON-safe copy of `value` fit for a log: secret-named properties become
 * `[redacted]` (at any depth), byte arrays `<N bytes>`, errors
 * `Name: message`, bigints strings; long strings, big collections, deep and
 * circular structures are cut.
 */
export function sanitizeLogValue(value: unknown): unknown {
  return sanitize(value, 0, new Set());
}

function sanitize(v: unknown, depth: number, seen: Set<object>): unknown {
  switch (typeof v) {
    case "string":
      return v.length > MAX_STRING ? v.substring(0, MAX_STRING) + "…" : v;
    case "number":
      return Number.isFinite(v) ? v : String(v);
    case "boolean":
      return v;
    case "undefined":
      return null;
    case "bigint":
      return v.toString();
    case "symbol":
      return v.toString();
    case "function":
      return `[function ${v.name || "anonymous"}]`;
  }
  if (v === null) return null;
  const o = v as object;
  if (ArrayBuffer.isView(o) || o instanceof ArrayBuffer) return `<${o.byteLength} bytes>`;
  if (o instanceof Error) return `${o.name}: ${o.message}`;
  if (o instanceof Date) return Number.isNaN(o.getTime()) ? "Invalid Date" : o.toISOString();
  if (seen.has(o)) return "[circular]";
  if (depth >= MAX_DEPTH) return "[…]";
  seen.add(o);
  try {
    if (Array.isArray(o) || o instanceof Set) {
      const arr = Array.from(o as Iterable<unknown>);
      const out = arr.slice(0, MAX_ITEMS).map((x) => sanitize(x, depth + 1, seen));
      if (arr.length > MAX_ITEMS) out.push(`… ${arr.length - MAX_ITEMS} more`);
      return out;
    }
    const entries: [string, unknown][] = o instanceof Map
      ? Array.from(o, ([k, x]) => [String(k), x])
      : Object.entries(o);
    const out: Record<string, unknown> = {};
    for (const [k, x] of entries.slice(0, MAX_ITEMS)) {
      Object.defineProperty(out, k, {
        value: isSecretName(k) ? REDACTED : sanitize(x, depth + 1, seen),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  } finally {
    seen.delete(o);
  }
}

/** Every value stored under a secret-named property, at any depth (to hide it in messages). */
function collectSecrets(v: unknown, out: Set<unknown>, depth: number): void {
  if (typeof v !== "object" || v === null || depth > MAX_DEPTH || ArrayBuffer.isView(v)) return;
  for (const [k, x] of Object.entries(v)) {
    if (isSecretName(k)) out.add(x);
    else collectSecrets(x, out, depth + 1);
  }
}

// ---------------------------------------------------------------------------
// Rendering

/** A LogTape record, redacted and rendered: what every output is made from. */
function toListenerRecord(r: LogRecord): LogListenerRecord {
  const secrets = new Set<unknown>();
  collectSecrets(r.properties, secrets, 0);
  let message = "";
  for (let i = 0; i < r.message.length; i++) {
    const part = r.message[i];
    if (i % 2 === 0) message += String(part);
    else message += secrets.has(part) ? REDACTED : renderValue(sanitize(part, 0, new Set()));
  }
  const category = r.category[0] === ROOT_CATEGORY ? r.category.slice(1) : r.category;
  return {
    level: r.level,
    category: category.length > 0 ? category.join(".") : ROOT_CATEGORY,
    message,
    properties: sanitize(r.properties, 0, new Set()) as Record<string, unknown>,
    timestamp: r.timestamp,
  };
}

function renderValue(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

const LEVEL_LABEL: Record<string, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO",
  warning: "WARN",
  error: "ERROR",
  fatal: "FATAL",
};

/** Names the message template interpolates (`{peer}` → `peer`), so text lines do not repeat them. */
function placeholders(raw: string | TemplateStringsArray): Set<string> {
  const names = new Set<string>();
  if (typeof raw !== "string") return names;
  for (const m of raw.replaceAll("{{", "").replaceAll("}}", "").matchAll(/\{([^{}]+)\}/g)) {
    names.add(m[1].trim());
  }
  return names;
}

/** One human-readable line: `time LEVEL category  message key=value ...`. */
export function formatTextLine(
  rec: LogListenerRecord,
  rawMessage: string | TemplateStringsArray = "",
): string {
  const used = placeholders(rawMessage);
  let line = `${new Date(rec.timestamp).toISOString()} ${
    (LEVEL_LABEL[rec.level] ?? rec.level.toUpperCase()).padEnd(5)
  } ${rec.category}  ${rec.message}`;
  for (const [k, v] of Object.entries(rec.properties)) {
    if (used.has(k) || used.has("*")) continue; // "{*}" interpolates them all
    const s = typeof v !== "string"
      ? JSON.stringify(v)
      : /^[^\s"=]+$/.test(v)
      ? v
      : JSON.stringify(v);
    line += ` ${k}=${s}`;
  }
  return line.replace(/[\r\n]+/g, " ");
}

/** One JSON line: `{"time","level","category","message","properties"}`. */
export function formatJsonLine(rec: LogListenerRecord): string {
  return JSON.stringify({
    time: new Date(rec.timestamp).toISOString(),
    level: rec.level,
    category: rec.category,
    message: rec.message,
    properties: rec.properties,
  });
}

// ---------------------------------------------------------------------------
// Sinks and configuration

const listeners = new Set<{ fn: LogListener }>();

/**
 * Subscribes `fn` to every log record that passes the configured level (once
 * {@link setupLogging} has run). A listener that throws is ignored.
 * @returns a function that unsubscribes.
 */
export function addLogListener(fn: LogListener): () => void {
  const entry = { fn };
  listeners.add(entry);
  return () => {
    listeners.delete(entry);
  };
}

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  const bytes = encoder.encode(line + "\n");
  let off = 0;
  try {
    while (off < bytes.length) off += Deno.stderr.writeSync(bytes.subarray(off));
  } catch {
    // stderr closed: nothing sensible to do
  }
}

const LEVEL_ORDER = ["trace", "debug", "info", "warning", "error", "fatal"];

/**
 * The level in force for a category path: the most specific entry of
 * `categories` that is a prefix of it (below the root), else `level`.
 */
export function levelFor(cfg: LogConfig, category: readonly string[]): string {
  const cats = cfg.categories;
  if (cats) {
    for (let n = category.length; n > 1; n--) {
      const hit = cats[category.slice(1, n).join(".")];
      if (hit) return hit;
    }
  }
  return cfg.level;
}

function makeSink(cfg: LogConfig, output: ((line: string) => void) | null): Sink {
  const format = cfg.format;
  const perCategory = cfg.categories && Object.keys(cfg.categories).length > 0;
  return (r: LogRecord) => {
    if (output === null && listeners.size === 0) return;
    if (
      perCategory &&
      LEVEL_ORDER.indexOf(r.level) < LEVEL_ORDER.indexOf(levelFor(cfg, r.category))
    ) return;
    const rec = toListenerRecord(r);
    if (output !== null) {
      output(format === "json" ? formatJsonLine(rec) : formatTextLine(rec, r.rawMessage));
    }
    for (const l of listeners) {
      try {
        l.fn(rec);
      } catch {
        // a broken listener must not break logging
      }
    }
  };
}

let chain: Promise<void> = Promise.resolve();

/**
 * (Re)configures logging: records of `ostp` loggers at `cfg.level` or above
 * go to stderr (or `options.output`) in `cfg.format`, and to listeners.
 * May be called again to change the settings; calls are applied in order.
 */
export function setupLogging(cfg: LogConfig, options: LogOutputOptions = {}): Promise<void> {
  const output = options.output === undefined ? writeStderr : options.output;
  const run = chain.then(() =>
    configure({
      reset: true,
      sinks: { main: makeSink(cfg, output) },
      loggers: [
        // The root passes the most verbose level configured anywhere; the sink
        // then applies the level of each record's own category.
        { category: [ROOT_CATEGORY], sinks: ["main"], lowestLevel: mostVerbose(cfg) },
        { category: ["logtape", "meta"], sinks: ["main"], lowestLevel: "warning" },
      ],
    })
  );
  chain = run.catch(() => {});
  return run;
}

function mostVerbose(cfg: LogConfig): LogConfig["level"] {
  let best = cfg.level;
  for (const l of Object.values(cfg.categories ?? {})) {
    if (LEVEL_ORDER.indexOf(l) < LEVEL_ORDER.indexOf(best)) best = l;
  }
  return best;
}

/** The logger for `category` under the root (`"server.dispatcher"` → `["ostp","server","dispatcher"]`). */
export function getLog(category: string): Logger {
  const parts = category.split(".").filter((p) => p.length > 0);
  return getLogger([ROOT_CATEGORY, ...parts]);
}
