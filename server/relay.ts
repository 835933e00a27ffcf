/**
 * Serves the streams of one session: reads each stream's open request, dials
 * the target over TCP (names resolved here, on the server), answers with the
 * status or the failure reason, then relays both directions with half-close.
 * @module
 */

import { type Dialer, DialError } from "../shared/duplex.ts";
import { closeQuietly, relay, writeAll } from "../shared/pipe.ts";
import type { OstpStream } from "../shared/session/connection.ts";
import { encodeOpenReply, readOpenRequest } from "../shared/wire/open.ts";
import { TimeoutLink, TimeoutQueue } from "../shared/timeout_queue.ts";

/** Counters of the relay, for status and metrics. */
export interface RelayStats {
  /** Streams that asked for a target. */
  opened: number;
  /** Dials that failed (reason sent to the client). */
  failed: number;
  /** Bytes client → target. */
  bytesUp: number;
  /** Bytes target → client. */
  bytesDown: number;
}

/** How long a stream may take to send its open request, ms. */
const REQUEST_TIMEOUT_MS = 30_000;

/** Open requests still awaited, on one timer for all of them. */
const pendingRequests = new TimeoutQueue(REQUEST_TIMEOUT_MS);

/** A stream whose open request has not arrived yet; reset when it takes too long. */
class PendingOpen extends TimeoutLink {
  constructor(readonly stream: OstpStream) {
    super();
  }
  onTimeout(): void {
    this.stream.reset();
  }
  /** Reads from the stream (the open request parser's source). */
  readonly read = (p: Uint8Array): Promise<number | null> => this.stream.read(p);
}

const OPEN_OK = encodeOpenReply();

/** Handles one stream end to end; never throws. */
export async function serveStream(
  stream: OstpStream,
  dial: Dialer,
  stats: RelayStats,
  onError: (e: unknown) => void,
  account?: (up: number, down: number) => void,
): Promise<void> {
  const pending = new PendingOpen(stream);
  pendingRequests.arm(pending);
  let target;
  try {
    target = await readOpenRequest(pending.read);
  } catch (e) {
    stream.reset();
    onError(e);
    return;
  } finally {
    pending.disarm();
  }
  stats.opened++;
  let upstream;
  try {
    upstream = await dial(target);
  } catch (e) {
    stats.failed++;
    const err = e instanceof DialError ? e : new DialError("general", String(e));
    try {
      await writeAll(stream, encodeOpenReply(err.reason, err.message));
      await stream.closeWrite();
    } catch {
      // The client went away; nothing to tell.
    }
    stream.close();
    return;
  }
  try {
    // The OK reply is copied into the stream's send buffer: one shared array will do.
    await writeAll(stream, OPEN_OK);
    // Stream → target is up, target → stream is down, counted as each chunk is written.
    const r = await relay(stream, upstream, account ? { onBytes: account } : undefined);
    stats.bytesUp += r.aToB;
    stats.bytesDown += r.bToA;
  } catch (e) {
    onError(e);
  } finally {
    // relay() closed both already: closeQuietly() makes these no-ops then.
    closeQuietly(upstream);
    closeQuietly(stream);
  }
}
