/**
 * Round-trip time estimation (RFC 6298 smoothing as used by RFC 9002 §5),
 * with the peer's reported ack delay subtracted when it is plausible.
 * @module
 */

/** Smoothed RTT, variance and minimum, all in milliseconds. */
export class RttEstimator {
  /** Most recent sample. */
  latest = 0;
  /** Smoothed RTT. */
  smoothed: number;
  /** RTT variation. */
  variance: number;
  /** Minimum seen over the session. */
  min = Infinity;
  private hasSample = false;

  /** Starts from `initial` ms until the first sample. */
  constructor(initial = 100) {
    this.smoothed = initial;
    this.variance = initial / 2;
  }

  /** True once a sample arrived. */
  get sampled(): boolean {
    return this.hasSample;
  }

  /** Folds in one sample; `ackDelay` is the peer's reported hold time (ms). */
  update(sample: number, ackDelay: number): void {
    this.latest = sample;
    if (sample < this.min) this.min = sample;
    if (!this.hasSample) {
      this.hasSample = true;
      this.smoothed = sample;
      this.variance = sample / 2;
      return;
    }
    let adjusted = sample;
    if (sample - ackDelay >= this.min) adjusted = sample - ackDelay;
    this.variance = 0.75 * this.variance + 0.25 * Math.abs(this.smoothed - adjusted);
    this.smoothed = 0.875 * this.smoothed + 0.125 * adjusted;
  }

  /** Probe timeout before backoff: srtt + max(4·rttvar, 1 ms) + max ack delay. */
  pto(maxAckDelay: number): number {
    return this.smoothed + Math.max(4 * this.variance, 1) + maxAckDelay;
  }
}
