/**
 * A token bucket: `rate` tokens per second up to `burst`, taken `n` at a time.
 * @module
 */

/** Rate limiter used for handshake trials. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  /** Starts full. `now` is injectable for tests (ms, monotonic). */
  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** Takes `n` tokens if available; false (and nothing taken) otherwise. */
  take(n = 1): boolean {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.rate);
    this.last = t;
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }
}
