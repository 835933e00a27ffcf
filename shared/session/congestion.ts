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
}

const STARTUP_GAIN = 2.885;
const DRAIN_GAIN = 1 / STARTUP_GAIN;
const PROBE_GAINS = [1.25, 0.75, 1, 1, 1, 1, 1, 1];
const BW_WINDOW_ROUNDS = 10;
const MIN_RTT_WINDOW_MS = 10_000;
const PROBE_RTT_MS = 200;

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

  /** `mss` is the largest datagram; `maxCwnd` caps memory per session. */
  constructor(mss: number, maxCwnd = 64 * 1024 * 1024) {
    this.mss = mss;
    this.minCwnd = 4 * mss;
    this.maxCwnd = maxCwnd;
    this.cwnd = 32 * mss;
    this.pacingRate = (STARTUP_GAIN * this.cwnd) / 100;
  }

  /** Called per ack with the rate sample, RTT sample and bytes still in flight. */
  onAck(now: number, rs: RateSample | null, rttSample: number, inFlight: number): void {
    if (rttSample > 0 && (rttSample <= this.minRtt || now - this.minRttStamp > MIN_RTT_WINDOW_MS)) {
      if (rttSample <= this.minRtt || this.mode !== "probe_rtt") {
        this.minRtt = rttSample;
        this.minRttStamp = now;
      }
    }
    if (rs) {
      this.roundStart = false;
      if (rs.priorDelivered >= this.nextRoundDelivered) {
        this.nextRoundDelivered = rs.priorDelivered + 1;
        this.round++;
        this.roundStart = true;
      }
      if (rs.interval > 0) {
        const bw = rs.delivered / rs.interval;
        if (!rs.appLimited || bw >= this.btlBw) this.addBwSample(bw);
      }
      if (this.roundStart) this.checkFullPipe(rs.appLimited);
    }
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
    let target = this.mode === "probe_rtt" ? this.minCwnd : this.bdp(this.cwndGain) + 3 * this.mss;
    if (!this.filledPipe && target < this.cwnd) target = this.cwnd;
    this.cwnd = Math.min(this.maxCwnd, Math.max(this.minCwnd, target));
  }
}
