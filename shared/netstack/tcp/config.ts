/**
 * Tunables of the TCP state machine, every one with a default (see docs/netstack.md for
 * why each value).
 * @module
 */

/** Per-connection TCP settings. */
export interface TcpConfig {
  /** Receive buffer per flow (bytes app→tunnel held): bounds our advertised window. */
  recvBuffer: number;
  /** Send buffer per flow (bytes tunnel→app not yet acknowledged). */
  sendBuffer: number;
  /** Out-of-order ranges held (the SACK blocks we can report). */
  maxOutOfOrder: number;
  /** Minimum retransmission timeout in ms (RFC 6298 says 1 s; Linux uses 200 ms). */
  minRto: number;
  /** Maximum retransmission timeout in ms. */
  maxRto: number;
  /** Initial RTO in ms (RFC 6298 §2.1). */
  initialRto: number;
  /** Retransmissions of one segment before the connection is aborted. */
  maxRetries: number;
  /** Delayed-ACK timeout in ms (RFC 9293 3.8.6.3: < 500 ms). */
  ackDelay: number;
  /** Idle time in ms before the first keepalive probe; 0 disables keepalive. */
  keepaliveIdle: number;
  /** Interval in ms between unanswered keepalive probes. */
  keepaliveInterval: number;
  /** Unanswered keepalive probes before the connection is aborted. */
  keepaliveCount: number;
  /** TIME-WAIT duration in ms (short: we are the application's own host). */
  timeWait: number;
  /** Largest persist (zero-window probe) interval in ms. */
  maxPersist: number;
  /** Initial congestion window in segments (RFC 6928). */
  initialCwnd: number;
  /** Smallest ssthresh after a loss, in segments (RFC 5681: 2). */
  minSsthresh: number;
  /** Negotiate SACK (RFC 2018). */
  sack: boolean;
  /** Negotiate timestamps (RFC 7323). */
  timestamps: boolean;
  /** Negotiate window scaling (RFC 7323). */
  windowScale: boolean;
}

/** The defaults. */
export const defaultTcpConfig: TcpConfig = {
  recvBuffer: 256 * 1024,
  sendBuffer: 256 * 1024,
  maxOutOfOrder: 16,
  minRto: 200,
  maxRto: 60_000,
  initialRto: 1000,
  maxRetries: 12,
  ackDelay: 20,
  keepaliveIdle: 120_000,
  keepaliveInterval: 10_000,
  keepaliveCount: 6,
  timeWait: 2000,
  maxPersist: 30_000,
  initialCwnd: 10,
  minSsthresh: 4,
  sack: true,
  timestamps: true,
  windowScale: true,
};
