/**
 * The messages between the server's main thread (control plane) and its
 * worker threads (data plane), and between two workers (forwarded datagrams
 * of a roaming client); docs/workers.md. Every message is structured-clone
 * data: no functions, no class instances.
 * @module
 */

import type { ServerConfig } from "../shared/config/types.ts";
import type { EgressConfig } from "../shared/config/egress.ts";
import type { TrafficStats } from "../shared/events.ts";
import type { DropCounters, ReservationAnswer } from "./dispatcher.ts";
import type { RelayStats } from "./relay.ts";
import type { UdpRelayStats } from "./udp_relay.ts";

/** An address as it crosses threads. */
export interface WireAddress {
  /** IP literal. */
  readonly hostname: string;
  /** UDP port. */
  readonly port: number;
}

/** The egress policy as serializable inputs; each worker rebuilds its `EgressPolicy`. */
export interface PolicyInputs {
  /** `egress.allow` entries. */
  readonly allow: EgressConfig["allow"];
  /** `egress.deny` entries. */
  readonly deny: EgressConfig["deny"];
  /** The server's own addresses (IP literals). */
  readonly self: readonly string[];
}

/** One live session as a worker reports it (the API's `SessionView` is made from it). */
export interface WorkerSessionView {
  /** Session id. */
  readonly sid: number;
  /** Client address as host:port. */
  readonly address: string;
  /** Smoothed RTT, ms. */
  readonly rttMs: number;
  /** Bytes on the wire sent. */
  readonly bytesSent: number;
  /** Bytes on the wire received. */
  readonly bytesReceived: number;
  /** Open streams. */
  readonly streams: number;
  /** When the handshake was accepted, ms since the epoch. */
  readonly createdAt: number;
  /** Times the session moved to a new client address. */
  readonly migrations: number;
}

/** A worker's counters, posted every second and on request. */
export interface WorkerStats {
  /** The worker's index. */
  readonly index: number;
  /** Traffic of its live sessions (`uptimeMs` unused). */
  readonly traffic: TrafficStats;
  /** Bytes sent + received of its busiest session (to pick rtt and cwnd across workers). */
  readonly busiestVolume: number;
  /** Its dispatcher's drop counters. */
  readonly drops: DropCounters;
  /** Handshakes it accepted. */
  readonly handshakes: number;
  /** Session moves summed over its live sessions. */
  readonly migrations: number;
  /** TCP targets its egress policy refused. */
  readonly egressDeniedTcp: number;
  /** Its TCP relay counters. */
  readonly relay: RelayStats;
  /** Its UDP relay counters. */
  readonly udp: UdpRelayStats;
  /** Datagrams it forwarded to the worker owning their session. */
  readonly forwarded: number;
  /** Forwarded datagrams it received from other workers. */
  readonly forwardedIn: number;
  /** Its live sessions. */
  readonly sessions: readonly WorkerSessionView[];
}

/** Per-key traffic since the last report: `[key hex, bytes up, bytes down, streams opened]`. */
export type CounterRow = readonly [string, number, number, number];

/** Settings a worker starts with. */
export interface WorkerInit {
  readonly type: "init";
  /** This worker's index (0-based). */
  readonly index: number;
  /** The configuration in force (listen ports resolved). */
  readonly config: ServerConfig;
  /** Every access key in force (config and API users). */
  readonly keys: readonly Uint8Array[];
  /** The egress policy inputs. */
  readonly policy: PolicyInputs;
  /** The session routes known now: `[session id, owning worker]`. */
  readonly routes: readonly (readonly [number, number])[];
}

/** Main → worker. */
export type ToWorker =
  | WorkerInit
  /** The answer to a {@link ReserveRequest}. */
  | { readonly type: "reserved"; readonly id: number; readonly answer: ReservationAnswer }
  /** Route changes: sessions of other workers opened (`add`) and ended (`remove`). */
  | {
    readonly type: "routes";
    readonly add: readonly (readonly [number, number])[];
    readonly remove: readonly number[];
  }
  /** A port to another worker (sent at start and when that worker was replaced). */
  | { readonly type: "peer"; readonly index: number; readonly port: MessagePort }
  /** Close a session of this worker (kick, limit, key removed). */
  | { readonly type: "close"; readonly sid: number; readonly code: number; readonly reason: string }
  /** The access keys in force now; sessions under removed keys close with `code` and `reason`. */
  | {
    readonly type: "keys";
    readonly keys: readonly Uint8Array[];
    readonly code: number;
    readonly reason: string;
  }
  /** New handshake limits (each worker applies them to itself). */
  | { readonly type: "limits"; readonly handshakeRate: number; readonly handshakeBurst: number }
  /** A new egress policy. */
  | { readonly type: "policy"; readonly policy: PolicyInputs }
  /** The configuration after a reload (what sessions read per use: mapping policy). */
  | { readonly type: "config"; readonly config: ServerConfig }
  /** Post counters, then a snapshot with this request id. */
  | { readonly type: "snapshot"; readonly id: number }
  /** Test hook: fail with an uncaught error (the path of a worker that dies). */
  | { readonly type: "fail"; readonly reason: string }
  /** Close every session with the reason, let the CLOSE datagrams leave, close the sockets. */
  | { readonly type: "stop"; readonly code: number; readonly reason: string };

/** A worker asks to accept a hello (main owns the replay cache, the table and admission). */
export interface ReserveRequest {
  readonly type: "reserve";
  /** Request id, echoed in the answer. */
  readonly id: number;
  /** Session id. */
  readonly sid: number;
  /** The client's ephemeral key. */
  readonly ephemeral: Uint8Array;
  /** The access key, hex (finds the user). */
  readonly keyHex: string;
  /** Where the hello came from, host:port (for the log). */
  readonly address: string;
}

/** Worker → main. */
export type FromWorker =
  /** Listening: the addresses bound (ports resolved). */
  | {
    readonly type: "ready";
    readonly addresses: readonly WireAddress[];
    /** The sockets' descriptors (closed by the main thread if the worker dies). */
    readonly fds: readonly number[];
  }
  /** Could not start; the message says why. */
  | { readonly type: "failed"; readonly error: string; readonly addrInUse: boolean }
  | ReserveRequest
  /** A reservation that was answered "ok" but not used. */
  | { readonly type: "released"; readonly sid: number }
  /** A session was accepted. */
  | {
    readonly type: "opened";
    readonly sid: number;
    readonly keyHex: string;
    readonly address: string;
    readonly createdAt: number;
  }
  /** A session ended (its last counters were posted before this). */
  | { readonly type: "closed"; readonly sid: number; readonly reason: string }
  /** Per-key traffic since the last report. */
  | { readonly type: "counters"; readonly rows: readonly CounterRow[] }
  /** Counters (periodic: `id` 0; else the request's id). */
  | { readonly type: "snapshot"; readonly id: number; readonly stats: WorkerStats }
  /** Every session closed and the sockets too, after a `stop`. */
  | { readonly type: "stopped" };

/** Worker → worker: datagrams of the receiver's sessions, packed by `ForwardBatch`. */
export interface ForwardMessage {
  readonly type: "forward";
  /** The packed records (transferred). */
  readonly buffer: ArrayBuffer;
  /** Bytes of `buffer` in use. */
  readonly length: number;
}
