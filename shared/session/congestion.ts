/**
 * Congestion control: a compact BBR (model-based, after Cardwell et al.,
 * "BBR: Congestion-Based Congestion Control", and draft-cardwell-iccrg-bbr).
 *
 * It paces at the measured bottleneck bandwidth and bounds data in flight by
 * a multiple of the bandwidth-delay product. Random, non-congestive loss does
 * not cut the rate — the property lossy mobile links need and that Reno/CUBIC
 * lack. Delivery-rate samples come from the session's ack processing
 * (draft-cheng-iccrg-delivery-rate-estimation).
 * @module
 */

/** One delivery-rate sample handed in after an ack. */
export interface RateSample {
  /** Bytes delivered over the interval. */
  delivered: number;
  /** Interval in ms. */
  interval: number;
  /** The sample came from an application-limited period. */
  appLimited: boolean;
  /** `delivered` counter of the newest packet acked (for round counting). */
  priorDelivered: number;
  /** The sender's `delivered` counter after this ack (where the next round starts). */
  totalDelivered: number;
}

const STARTUP_GAIN = 2.885;
const DRAIN_GAIN = 1 / STARTUP_GAIN;
const PROBE_GAINS = [1.25, 0.75, 1, 1, 1, 1, 1, 1];
const BW_WINDOW_ROUNDS = 10;
const MIN_RTT_WINDOW_MS = 10_000;
const PROBE_RTT_MS = 200;
/**
 * The shortest round trip the window is sized for, ms. Between two daemons on
 * one host or a LAN the measured minimum can be 50 µs, yet a JS event loop
 * answers in batches and its timers fire at 1 ms granularity: a window of
 * 2 × bandwidth × 50 µs (a few packets) would starve the path. Pacing still
 * uses the bandwidth estimate alone, so this floor adds no queue of its own
 * beyond 1 ms of data.
 */
const MIN_WINDOW_RTT_MS = 1;
/**
 * A queue that outlasts a whole round trip: the smallest RTT sample of a
 * round exceeds the minimum by this much (ms, or a quarter of the minimum if
 * more). Jitter raises some samples of a round; only a standing queue raises
 * all of them.
 */
const STANDING_QUEUE_MS = 4;
/**
 * Each half of the two-slot windowed max of ack aggregation lasts this many
 * rounds and at least this long (ms): on a sub-millisecond path five rounds
 * would forget a scheduling stall within a few ms.
 */
const EXTRA_ACKED_WINDOW_ROUNDS = 5;
const EXTRA_ACKED_WINDOW_MS = 100;
/** Longest aggregation the window makes room for, ms of the bandwidth estimate. */
const EXTRA_ACKED_MAX_MS = 100;

type Mode = "startup" | "drain" | "probe_bw" | "probe_rtt";

/** The sender's congestion state: a window and a pacing rate. */
export class Bbr {
  /** Congestion window in bytes. */
  cwnd: number;
  /** Pacing rate in bytes per ms. */
  pacingRate: number;
  /** Current mode, for stats and tests. */
  mode: Mode = "startup";
  /** Bottleneck bandwidth estimate, bytes per ms. */
  btlBw = 0;
  /** Minimum RTT estimate, ms. */
  minRtt = Infinity;

  private readonly mss: number;
  private readonly minCwnd: number;
  private readonly maxCwnd: number;
  private bwSamples: number[] = [];
  private bwRounds: number[] = [];
  private round = 0;
  private nextRoundDelivered = 0;
  private roundStart = false;
  private fullBw = 0;
  private fullBwCount = 0;
  private filledPipe = false;
  private cycleIndex = 0;
  private cycleStamp = 0;
  private minRttStamp = 0;
  private probeRttDone = 0;
  private pacingGain = STARTUP_GAIN;
  private cwndGain = STARTUP_GAIN;
  // Ack aggregation ("extra acked", as in Linux BBR): acks that arrive in
  // bursts (a receiver that processes datagrams in batches, a busy event loop)
  // deliver more than bandwidth × time; the window must hold that much more.
  private readonly extraAcked = [0, 0];
  private extraAckedIdx = 0;
  private extraAckedRounds = 0;
  private extraAckedStamp = 0;
  private ackEpochStart = 0;
  private ackEpochAcked = 0;
  // Standing-queue guard: the smallest RTT and the largest rate of the round in progress.
  private roundMinRtt = Infinity;
  private roundMaxBw = 0;
  /** Rounds in which a standing queue was found (statistics and tests). */
  standingQueues = 0;

  /** `mss` is the largest datagram; `maxCwnd` caps memory per session. */
  constructor(mss: number, maxCwnd = 64 * 1024 * 1024) {
    this.mss = mss;
    this.minCwnd = 4 * mss;
    this.maxCwnd = maxCwnd;
    this.cwnd = 32 * mss;
    this.pacingRate = (STARTUP_GAIN * this.cwnd) / 100;
  }

  /**
   * Called per ack with the rate sample, RTT sample, bytes still in flight and
   * bytes this ack newly acknowledged.
   */
  onAck(
    now: number,
    rs: RateSample | null,
    rttSample: number,
    inFlight: number,
    acked = 0,
  ): void {
    if (rttSample > 0 && (rttSample <= this.minRtt || now - this.minRttStamp > MIN_RTT_WINDOW_MS)) {
      if (rttSample <= this.minRtt || this.mode !== "probe_rtt") {
        this.minRtt = rttSample;
        this.minRttStamp = now;
      }
    }
    if (rs) {
      this.roundStart = false;
      if (rs.priorDelivered >= this.nextRoundDelivered) {
        // A round trip ends once a packet sent after this ack is acked.
        this.nextRoundDelivered = rs.totalDelivered;
        this.round++;
        this.roundStart = true;
        this.checkStandingQueue(now, this.roundMinRtt, this.roundMaxBw, inFlight);
        this.roundMinRtt = Infinity;
        this.roundMaxBw = 0;
      }
      if (rs.interval > 0) {
        const bw = rs.delivered / rs.interval;
        if (!rs.appLimited || bw >= this.btlBw) {
          this.addBwSample(bw);
          if (bw > this.roundMaxBw) this.roundMaxBw = bw;
        }
      }
      if (this.roundStart) this.checkFullPipe(rs.appLimited);
    }
    if (rttSample > 0 && rttSample < this.roundMinRtt) this.roundMinRtt = rttSample;
    if (acked > 0) this.updateAckAggregation(now, acked);
    this.updateMode(now, inFlight);
    this.setRates();
  }

  /** Loss does not cut BBR's rate; kept as a hook for statistics. */
  onLoss(_lostBytes: number): void {}

  private addBwSample(bw: number): void {
    // Windowed max over the last BW_WINDOW_ROUNDS rounds.
    const last = this.bwRounds.length - 1;
    if (last >= 0 && this.bwRounds[last] === this.round) {
      if (bw > this.bwSamples[last]) this.bwSamples[last] = bw;
    } else {
      this.bwSamples.push(bw);
      this.bwRounds.push(this.round);
    }
    while (this.bwRounds.length > 0 && this.bwRounds[0] <= this.round - BW_WINDOW_ROUNDS) {
      this.bwRounds.shift();
      this.bwSamples.shift();
    }
    let max = 0;
    for (const s of this.bwSamples) if (s > max) max = s;
    this.btlBw = max;
  }

  /**
   * Called at the end of each round with its smallest RTT sample and largest
   * delivery rate. A round whose every packet waited in a queue, with more of
   * our bytes in flight than the path holds, means the sender put more in
   * flight than the path drains — a bandwidth estimate
   * inflated by a burst, or startup overshooting into a deep buffer (a busy
   * receiver's socket buffer, a userspace hop). Startup ends there (as
   * HyStart++'s delay rule ends slow start); in probe_bw the estimate falls
   * back to what the round really delivered and one drain phase follows, so
   * buffers sized for throughput do not turn into standing queues.
   */
  private checkStandingQueue(
    now: number,
    roundMin: number,
    roundBw: number,
    inFlight: number,
  ): void {
    if (this.minRtt === Infinity || roundMin === Infinity || this.btlBw === 0) return;
    const threshold = Math.max(STANDING_QUEUE_MS, this.minRtt / 4);
    if (roundMin <= this.minRtt + threshold) return;
    // Our own queue needs our own bytes: with less in flight than the path
    // holds plus the threshold, the delay was a stall elsewhere (a descheduled
    // hop or receiver), which sending less would not shorten.
    if (inFlight <= this.btlBw * (this.minRtt + threshold)) return;
    if (this.mode === "startup") {
      this.standingQueues++;
      this.filledPipe = true;
      return;
    }
    if (this.mode !== "probe_bw" || this.pacingGain > 1) return;
    this.standingQueues++;
    if (roundBw > 0 && roundBw < this.btlBw) {
      this.bwSamples = [roundBw];
      this.bwRounds = [this.round];
      this.btlBw = roundBw;
    }
    this.cycleIndex = PROBE_GAINS.indexOf(0.75);
    this.cycleStamp = now;
    this.pacingGain = 0.75;
  }

  private updateAckAggregation(now: number, acked: number): void {
    if (
      this.roundStart && ++this.extraAckedRounds >= EXTRA_ACKED_WINDOW_ROUNDS &&
      now - this.extraAckedStamp >= EXTRA_ACKED_WINDOW_MS
    ) {
      this.extraAckedRounds = 0;
      this.extraAckedStamp = now;
      this.extraAckedIdx ^= 1;
      this.extraAcked[this.extraAckedIdx] = 0;
    }
    let expected = this.btlBw * (now - this.ackEpochStart);
    if (this.ackEpochAcked <= expected) {
      // Acks came no faster than the bandwidth estimate: a new epoch starts.
      this.ackEpochAcked = 0;
      this.ackEpochStart = now;
      expected = 0;
    }
    this.ackEpochAcked += acked;
    const extra = Math.min(this.ackEpochAcked - expected, this.cwnd);
    if (extra > this.extraAcked[this.extraAckedIdx]) this.extraAcked[this.extraAckedIdx] = extra;
  }

  /** Room the window keeps for ack aggregation, bytes (once the pipe is full). */
  get aggregationRoom(): number {
    if (!this.filledPipe) return 0;
    const extra = Math.max(this.extraAcked[0], this.extraAcked[1]);
    return Math.min(extra, this.btlBw * EXTRA_ACKED_MAX_MS);
  }

  private checkFullPipe(appLimited: boolean): void {
    if (this.filledPipe || appLimited) return;
    if (this.btlBw >= this.fullBw * 1.25) {
      this.fullBw = this.btlBw;
      this.fullBwCount = 0;
      return;
    }
    if (++this.fullBwCount >= 3) this.filledPipe = true;
  }

  private bdp(gain: number): number {
    if (this.btlBw === 0 || this.minRtt === Infinity) return this.cwnd;
    return gain * this.btlBw * this.minRtt;
  }

  /** The window's share of the bandwidth-delay product, with the round trip floored. */
  private windowBdp(gain: number): number {
    if (this.btlBw === 0 || this.minRtt === Infinity) return this.cwnd;
    return gain * this.btlBw * Math.max(this.minRtt, MIN_WINDOW_RTT_MS);
  }

  private updateMode(now: number, inFlight: number): void {
    if (this.mode === "startup" && this.filledPipe) {
      this.mode = "drain";
      this.pacingGain = DRAIN_GAIN;
      this.cwndGain = STARTUP_GAIN;
    }
    if (this.mode === "drain" && inFlight <= this.bdp(1)) {
      this.enterProbeBw(now);
    }
    if (this.mode === "probe_bw") {
      const phaseLen = this.minRtt === Infinity ? 100 : Math.max(this.minRtt, 1);
      let advance = now - this.cycleStamp > phaseLen;
      if (this.pacingGain > 1 && inFlight < this.bdp(this.pacingGain)) advance = false;
      if (this.pacingGain < 1 && inFlight <= this.bdp(1)) advance = true;
      if (advance) {
        this.cycleIndex = (this.cycleIndex + 1) % PROBE_GAINS.length;
        this.cycleStamp = now;
        this.pacingGain = PROBE_GAINS[this.cycleIndex];
      }
    }
    if (
      this.mode !== "probe_rtt" && this.mode !== "startup" && this.minRttStamp > 0 &&
      now - this.minRttStamp > MIN_RTT_WINDOW_MS
    ) {
      this.mode = "probe_rtt";
      this.pacingGain = 1;
      this.probeRttDone = now + PROBE_RTT_MS;
    }
    if (this.mode === "probe_rtt" && now >= this.probeRttDone) {
      this.minRttStamp = now;
      this.enterProbeBw(now);
    }
  }

  private enterProbeBw(now: number): void {
    this.mode = "probe_bw";
    this.cwndGain = 2;
    this.cycleIndex = 2;
    this.cycleStamp = now;
    this.pacingGain = 1;
  }

  private setRates(): void {
    if (this.btlBw === 0 && this.minRtt !== Infinity) {
      this.pacingRate = (this.pacingGain * this.cwnd) / Math.max(this.minRtt, 0.05);
    } else if (this.btlBw > 0) {
      const rate = this.pacingGain * this.btlBw;
      if (this.filledPipe || rate > this.pacingRate) this.pacingRate = rate;
    }
    let target = this.mode === "probe_rtt"
      ? this.minCwnd
      : this.windowBdp(this.cwndGain) + 3 * this.mss + this.aggregationRoom;
    if (!this.filledPipe && target < this.cwnd) target = this.cwnd;
    this.cwnd = Math.min(this.maxCwnd, Math.max(this.minCwnd, target));
  }
}
