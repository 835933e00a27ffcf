/**
 * Serves the streams of one session: reads each stream's open request, dials
 * the target over TCP (names resolved here, on the server), answers with the
 * status or the failure reason, then relays both directions with half-close.
 * @module
 */

import { type Dialer, DialError, type Duplex } from "../shared/duplex.ts";
import { closeQuietly, relay, writeAll } from "../shared/pipe.ts";
import type { OstpStream } from "../shared/session/connection.ts";
import { encodeOpenReply, readOpenRequest } from "../shared/wire/open.ts";

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

/** Handles one stream end to end; never throws. */
export async function serveStream(
  stream: OstpStream,
  dial: Dialer,
  stats: RelayStats,
  onError: (e: unknown) => void,
  account?: (up: number, down: number) => void,
): Promise<void> {
  const timer = setTimeout(() => stream.reset(), REQUEST_TIMEOUT_MS);
  let target;
  try {
    target = await readOpenRequest((p) => stream.read(p));
  } catch (e) {
    stream.reset();
    onError(e);
    return;
  } finally {
    clearTimeout(timer);
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
    await writeAll(stream, encodeOpenReply());
    const r = await relay(stream, account ? counted(upstream, account) : upstream);
    stats.bytesUp += r.aToB;
    stats.bytesDown += r.bToA;
  } catch (e) {
    onError(e);
  } finally {
    closeQuietly(upstream);
    closeQuietly(stream);
  }
}

/** `d` with every byte written (up) and read (down) reported to `account` as it passes. */
function counted(d: Duplex, account: (up: number, down: number) => void): Duplex {
  return {
    async read(p) {
      const n = await d.read(p);
      if (n) account(0, n);
      return n;
    },
    async write(p) {
      const n = await d.write(p);
      if (n > 0) account(n, 0);
      return n;
    },
    closeWrite: () => d.closeWrite(),
    close: () => d.close(),
  };
}
