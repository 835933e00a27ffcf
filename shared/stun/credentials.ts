/**
 * STUN's long-term credentials (RFC 8489 §9.2): the MESSAGE-INTEGRITY key
 * is MD5(username ":" realm ":" password), the password prepared as
 * SASLprep (RFC 4013) asks — characters mapped to nothing removed, other
 * spaces made U+0020, NFKC — which is what the RFC 5769 vectors and
 * RFC 5389 servers such as coturn expect.
 * @module
 */

import { md5 } from "@noble/hashes/legacy.js";

/** RFC 3454 B.1: characters SASLprep maps to nothing. */
const MAPPED_TO_NOTHING =
  /[\u00ad\u034f\u1806\u180b-\u180d\u200b-\u200d\u2060\ufe00-\ufe0f\ufeff]/g;
/** RFC 3454 C.1.2: non-ASCII spaces, mapped to U+0020. */
const NON_ASCII_SPACE = /[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]/g;

/** The SASLprep mapping and normalisation of `s` (prohibited characters are kept). */
export function saslprep(s: string): string {
  return s.replace(MAPPED_TO_NOTHING, "").replace(NON_ASCII_SPACE, " ").normalize("NFKC");
}

/** The long-term credential key: MD5(username:realm:SASLprep(password)). */
export function longTermKey(username: string, realm: string, password: string): Uint8Array {
  return md5(new TextEncoder().encode(`${username}:${realm}:${saslprep(password)}`));
}

/** The short-term credential key: SASLprep(password) as UTF-8. */
export function shortTermKey(password: string): Uint8Array {
  return new TextEncoder().encode(saslprep(password));
}
