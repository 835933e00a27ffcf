/**
 * DNS messages (RFC 1035, RFC 3596 for AAAA), as far as a tunnel needs them:
 * read the question of a query an application sent, read the addresses and
 * names of the answer that came back (to remember which name an address
 * belongs to, so domain rules work for traffic that arrives as bare IPs), and
 * write small answers of our own (an error, an empty answer, a local record).
 *
 * Failure convention: parsers never throw; they return the message or a
 * {@link DnsError} string. Writers throw `RangeError` only for programmer
 * errors (a name that cannot be encoded).
 * @module
 */

/** Why a message could not be read. */
export type DnsError =
  | "truncated"
  | "bad-name"
  | "pointer-loop"
  | "not-a-query"
  | "not-a-response"
  | "no-question";

/** Record types this module names. */
export const RecordType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  HTTPS: 65,
  ANY: 255,
} as const;

/** Response codes. */
export const Rcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

/** The question of a query. */
export interface DnsQuestion {
  /** Lowercase name without the trailing dot ("" for the root). */
  name: string;
  type: number;
  class: number;
}

/** A query as an application sent it. */
export interface DnsQuery {
  id: number;
  /** Header flags word as received (opcode, RD, …). */
  flags: number;
  question: DnsQuestion;
  /** End of the question section, bytes (what {@link buildResponse} echoes). */
  questionEnd: number;
}

/** One answer record the tunnel cares about. */
export interface DnsRecord {
  name: string;
  type: number;
  ttl: number;
  /** A: 4 bytes, AAAA: 16 bytes (views into the message). */
  address?: Uint8Array;
  /** CNAME: the target name. */
  target?: string;
}

/** A response: its question and answer section. */
export interface DnsResponse {
  id: number;
  rcode: number;
  truncated: boolean;
  question: DnsQuestion | null;
  answers: DnsRecord[];
}

const FLAG_QR = 0x8000;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;
const MAX_ANSWERS = 64;

/** True if `r` is a {@link DnsError}. */
export function isDnsError(r: unknown): r is DnsError {
  return typeof r === "string";
}

/** Reads a possibly compressed name at `off`: the name and the offset after it in place. */
function readName(buf: Uint8Array, off: number): { name: string; end: number } | DnsError {
  const labels: string[] = [];
  let end = -1;
  let pos = off;
  let jumps = 0;
  let length = 0;
  for (;;) {
    if (pos >= buf.length) return "truncated";
    const len = buf[pos];
    if (len === 0) {
      if (end < 0) end = pos + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= buf.length) return "truncated";
      if (++jumps > 32) return "pointer-loop";
      if (end < 0) end = pos + 2;
      const target = ((len & 0x3f) << 8) | buf[pos + 1];
      if (target >= pos) return "pointer-loop"; // pointers go backwards only
      pos = target;
      continue;
    }
    if ((len & 0xc0) !== 0) return "bad-name";
    if (pos + 1 + len > buf.length) return "truncated";
    length += len + 1;
    if (length > 255) return "bad-name";
    let label = "";
    for (let i = pos + 1; i <= pos + len; i++) {
      const c = buf[i];
      label += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c + 32 : c);
    }
    labels.push(label);
    pos += len + 1;
  }
  return { name: labels.join("."), end };
}

function readQuestion(
  buf: Uint8Array,
  off: number,
): { q: DnsQuestion; end: number } | DnsError {
  const n = readName(buf, off);
  if (isDnsError(n)) return n;
  if (n.end + 4 > buf.length) return "truncated";
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    q: { name: n.name, type: v.getUint16(n.end), class: v.getUint16(n.end + 2) },
    end: n.end + 4,
  };
}

/** Reads a query's header and first question. */
export function parseQuery(buf: Uint8Array): DnsQuery | DnsError {
  if (buf.length < 12) return "truncated";
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const flags = v.getUint16(2);
  if (flags & FLAG_QR) return "not-a-query";
  if (v.getUint16(4) < 1) return "no-question";
  const q = readQuestion(buf, 12);
  if (isDnsError(q)) return q;
  return { id: v.getUint16(0), flags, question: q.q, questionEnd: q.end };
}

/** Reads a response's question and the A, AAAA and CNAME records of its answer section. */
export function parseResponse(buf: Uint8Array): DnsResponse | DnsError {
  if (buf.length < 12) return "truncated";
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const flags = v.getUint16(2);
  if (!(flags & FLAG_QR)) return "not-a-response";
  const qd = v.getUint16(4);
  const an = v.getUint16(6);
  let pos = 12;
  let question: DnsQuestion | null = null;
  for (let i = 0; i < qd; i++) {
    const q = readQuestion(buf, pos);
    if (isDnsError(q)) return q;
    if (i === 0) question = q.q;
    pos = q.end;
  }
  const answers: DnsRecord[] = [];
  for (let i = 0; i < an && i < MAX_ANSWERS; i++) {
    const n = readName(buf, pos);
    if (isDnsError(n)) return n;
    if (n.end + 10 > buf.length) return "truncated";
    const type = v.getUint16(n.end);
    const ttl = v.getUint32(n.end + 4);
    const rdlen = v.getUint16(n.end + 8);
    const rd = n.end + 10;
    if (rd + rdlen > buf.length) return "truncated";
    if (type === RecordType.A && rdlen === 4) {
      answers.push({ name: n.name, type, ttl, address: buf.subarray(rd, rd + 4) });
    } else if (type === RecordType.AAAA && rdlen === 16) {
      answers.push({ name: n.name, type, ttl, address: buf.subarray(rd, rd + 16) });
    } else if (type === RecordType.CNAME) {
      const t = readName(buf, rd);
      if (isDnsError(t)) return t;
      answers.push({ name: n.name, type, ttl, target: t.name });
    }
    pos = rd + rdlen;
  }
  return {
    id: v.getUint16(0),
    rcode: flags & 0xf,
    truncated: (flags & FLAG_TC) !== 0,
    question,
    answers,
  };
}

/**
 * The addresses a response gives for its question's name, following CNAME
 * chains (bounded), with the smallest TTL on the way: what to remember as
 * "these addresses belong to that name".
 */
export function addressesOf(
  r: DnsResponse,
): { name: string; addresses: Uint8Array[]; ttl: number } | null {
  if (!r.question || r.rcode !== Rcode.NOERROR) return null;
  const names = new Set([r.question.name]);
  let ttl = Infinity;
  // CNAMEs may come in any order: follow them until nothing new is added.
  for (let round = 0; round < 8; round++) {
    let grew = false;
    for (const a of r.answers) {
      if (a.target !== undefined && names.has(a.name) && !names.has(a.target)) {
        names.add(a.target);
        ttl = Math.min(ttl, a.ttl);
        grew = true;
      }
    }
    if (!grew) break;
  }
  const addresses: Uint8Array[] = [];
  for (const a of r.answers) {
    if (a.address && names.has(a.name)) {
      addresses.push(a.address);
      ttl = Math.min(ttl, a.ttl);
    }
  }
  if (addresses.length === 0) return null;
  return { name: r.question.name, addresses, ttl };
}

/** A record of our own in a response. */
export interface AnswerRecord {
  type: number;
  ttl: number;
  /** Raw record data (4 bytes for A, 16 for AAAA). */
  data: Uint8Array;
}

/**
 * Writes a response to `query` (its raw bytes, `queryBytes`): the same id and
 * question, RD copied, RA set, `rcode`, and `answers` (each naming the
 * question by a pointer). Returns a new buffer.
 */
export function buildResponse(
  queryBytes: Uint8Array,
  query: DnsQuery,
  rcode: number,
  answers: readonly AnswerRecord[] = [],
): Uint8Array {
  let size = query.questionEnd;
  for (const a of answers) size += 12 + a.data.length;
  const out = new Uint8Array(size);
  out.set(queryBytes.subarray(0, query.questionEnd));
  const v = new DataView(out.buffer);
  const opcode = query.flags & 0x7800;
  v.setUint16(2, FLAG_QR | opcode | (query.flags & FLAG_RD) | FLAG_RA | (rcode & 0xf));
  v.setUint16(4, 1);
  v.setUint16(6, answers.length);
  v.setUint16(8, 0);
  v.setUint16(10, 0);
  let pos = query.questionEnd;
  for (const a of answers) {
    v.setUint16(pos, 0xc00c); // the question's name
    v.setUint16(pos + 2, a.type);
    v.setUint16(pos + 4, 1);
    v.setUint32(pos + 6, a.ttl >>> 0);
    v.setUint16(pos + 10, a.data.length);
    out.set(a.data, pos + 12);
    pos += 12 + a.data.length;
  }
  return out;
}

/** Writes a query for `name` (recursion desired): for tests and resolvers of our own. */
export function buildQuery(id: number, name: string, type: number): Uint8Array {
  const labels = name === "" ? [] : name.replace(/\.$/, "").split(".");
  let size = 12 + 1 + 4;
  for (const l of labels) {
    if (l.length === 0 || l.length > 63) throw new RangeError(`bad label in ${name}`);
    size += 1 + l.length;
  }
  if (size - 16 > 255) throw new RangeError("name too long");
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  v.setUint16(0, id);
  v.setUint16(2, FLAG_RD);
  v.setUint16(4, 1);
  let pos = 12;
  for (const l of labels) {
    out[pos++] = l.length;
    for (let i = 0; i < l.length; i++) {
      const c = l.charCodeAt(i);
      if (c > 0x7f) throw new RangeError("names must be ASCII (punycode)");
      out[pos++] = c;
    }
  }
  out[pos++] = 0;
  v.setUint16(pos, type);
  v.setUint16(pos + 2, 1);
  return out;
}
