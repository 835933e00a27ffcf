/**
 * The one failure convention of the wire layer (`shared/netstack/wire/`).
 *
 * - **Parsing never throws**, whatever the input. A `parse…` function returns its view
 *   (an object describing the packet, holding `subarray` views into the input) or a
 *   {@link WireError}: a short string constant, so `typeof r === "string"` (or
 *   {@link isWireError}) tells the two apart and the value can be counted or logged as is.
 *   Inputs from the network are dropped silently by the stack; the error is for counters
 *   and debugging.
 * - **Emitting throws `RangeError` only for programmer errors**: an output buffer too
 *   small, a field out of range (a port above 65535, a 5-byte address). Everything an
 *   emitter is given comes from our own code, so a throw there is a bug to fix, not input
 *   to tolerate.
 * - Builders that may legitimately decline (an ICMP error about an ICMP error, a
 *   reassembly that drops a fragment) return a {@link WireError} as well.
 *
 * Views are reusable: every `parse…(buf, …, out?)` fills `out` when given, so a hot loop
 * allocates no view per packet. After an error, `out` may be partly overwritten: use it
 * only when the parse returned it. A view's `subarray`s point into the input: copy what
 * must outlive the input buffer.
 * @module
 */

/** Why a packet was rejected (or a builder declined). */
export const WireError = {
  /** The buffer ends before a header or a length field says it should. */
  Truncated: "truncated",
  /** The IP version nibble is not the one expected. */
  BadVersion: "bad-version",
  /** A header length field is below its minimum (IPv4 IHL < 5, TCP data offset < 5). */
  BadHeaderLength: "bad-header-length",
  /** A total/payload length field is inconsistent (below the header, UDP length < 8). */
  BadLength: "bad-length",
  /** A checksum does not verify (or is zero where zero is forbidden: UDP over IPv6). */
  BadChecksum: "bad-checksum",
  /** A TCP option or IPv6 extension header has a malformed length or content. */
  BadOption: "bad-option",
  /** An IPv6 extension header chain is longer than we walk, or Hop-by-Hop is misplaced. */
  BadExtensionHeader: "bad-extension-header",
  /** A fragment that cannot be part of a valid datagram (too big, misaligned, tiny). */
  BadFragment: "bad-fragment",
  /** A fragment overlaps one already held: the whole datagram is dropped (RFC 5722). */
  OverlappingFragment: "overlapping-fragment",
  /** A resource bound (reassemblies, bytes held) forced a drop. */
  LimitReached: "limit-reached",
  /** A protocol this function does not handle. */
  Unsupported: "unsupported",
  /** An ICMP error must not be sent about this packet (RFC 1122 §3.2.2, RFC 4443 §2.4). */
  NotAllowed: "not-allowed",
} as const;

/** One of the {@link WireError} values. */
export type WireError = typeof WireError[keyof typeof WireError];

/** True when `r` is a {@link WireError} rather than a parsed view or a result. */
export function isWireError(r: unknown): r is WireError {
  return typeof r === "string";
}
