/**
 * The payload demultiplexer of a connection's DATAGRAM frames (DESIGN.md,
 * "The seams"): the first byte of every datagram payload names its kind, and
 * each kind's handler registers here instead of one hard-wired callback —
 * the UDP relay (kind 1, `shared/wire/udp.ts`), layer-3 packets (kind 2),
 * IN UDP mapping flows (kind 3, `shared/wire/mapping.ts`). A datagram of a kind nobody handles is dropped and
 * counted, never an error: the peer may speak a newer version.
 * @module
 */

/** First bytes of DATAGRAM payloads (docs/protocol.md). */
export const DatagramKind = {
  /** A relayed UDP datagram (`shared/wire/udp.ts`). */
  udp: 0x01,
  /** A raw IP packet of the layer-3 tunnel: the kind byte, then the packet. */
  l3: 0x02,
  /** A datagram of an IN UDP mapping flow (`shared/wire/mapping.ts`). */
  map: 0x03,
} as const;

/** Handles one datagram payload, kind byte included (valid only during the call). */
export type DatagramHandler = (payload: Uint8Array) => void;

/** Routes datagram payloads to the handler of their kind. */
export class DatagramDemux {
  /** Datagrams dropped: empty, or of a kind with no handler. */
  dropped = 0;
  readonly #handlers: (DatagramHandler | undefined)[] = new Array(256);

  /** Sets the handler of `kind` (replacing one); returns a function that removes it. */
  on(kind: number, handler: DatagramHandler): () => void {
    if (!Number.isInteger(kind) || kind < 0 || kind > 255) throw new RangeError(`kind ${kind}`);
    this.#handlers[kind] = handler;
    return () => {
      if (this.#handlers[kind] === handler) this.#handlers[kind] = undefined;
    };
  }

  /** Hands `payload` to its kind's handler (assign to `Connection.onDatagram`). */
  readonly handle = (payload: Uint8Array): void => {
    const h = payload.length > 0 ? this.#handlers[payload[0]] : undefined;
    if (h) h(payload);
    else this.dropped++;
  };
}
