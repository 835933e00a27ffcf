/**
 * The adaptive FEC ratio: from the loss rate a session measures (the
 * fraction of packets lost over a recent window, fed in as numbers), the
 * number of parity datagrams a group of `k` data datagrams should carry.
 *
 * The choice: losses are taken as independent with probability `p` (the
 * measured rate). A group of `k + m` datagrams is unrecoverable when more
 * than `m` of them are lost, with probability the binomial tail
 * `P[X > m]`, `X ~ Binomial(k + m, p)`. The parity count is the least `m`
 * whose tail is at most `target` (default 10⁻³), capped at `k` (never more
 * parity than data), at `maxParity` and at `255 − k`. Below `cleanLoss`
 * (default 0.5 %) the path is taken as clean and `m` is 0: no parity, only
 * the 5-byte header. Bursty loss defeats the independence assumption; the
 * caps bound the cost of being wrong, and the session's own retransmission
 * remains the backstop.
 *
 * Hysteresis, so the ratio does not flap: the controller keeps an effective
 * loss rate that rises at once to any higher measurement (protection comes
 * quickly), but falls only after `holdUpdates` consecutive measurements
 * (default 3) all below it by the factor `fallFactor` (default 1.5), and
 * then only to the highest of those. A rate that wobbles by less than 1.5×
 * keeps the ratio where it is, at the clean threshold too.
 * @module
 */

/** Options of an {@link AdaptiveParity}. */
export interface AdaptiveParityOptions {
  /** Largest acceptable probability that a group is unrecoverable (default 1e-3). */
  target?: number;
  /** Loss rate below which no parity is sent (default 0.005). */
  cleanLoss?: number;
  /** Largest parity count ever returned (default 32). */
  maxParity?: number;
  /** Measurements in a row that must be lower before the rate falls (default 3). */
  holdUpdates?: number;
  /** How much lower (a factor) they must be (default 1.5). */
  fallFactor?: number;
}

/**
 * `P[X > m]` for `X ~ Binomial(n, p)`: the probability that more than `m`
 * of `n` independent trials with probability `p` each fail. Summed term by
 * term over the tail (no `1 − sum` cancellation).
 */
export function binomialTail(n: number, m: number, p: number): number {
  if (m >= n) return 0;
  if (m < 0) return 1;
  if (p <= 0) return 0;
  if (p >= 1) return 1;
  // term(i) = C(n, i) p^i (1-p)^(n-i), built in logs up to i = m + 1.
  const lp = Math.log(p);
  const lq = Math.log1p(-p);
  let logC = 0; // log C(n, i)
  for (let i = 1; i <= m + 1; i++) logC += Math.log((n - i + 1) / i);
  let i = m + 1;
  let term = Math.exp(logC + i * lp + (n - i) * lq);
  let sum = 0;
  const ratio = p / (1 - p);
  for (; i <= n; i++) {
    sum += term;
    term *= ((n - i) / (i + 1)) * ratio;
    if (term < sum * 1e-17) break;
  }
  return Math.min(1, sum);
}

/**
 * The least parity count for `k` data shards at loss rate `p` whose group
 * loss probability is at most `target`, capped at `min(k, maxParity, 255 − k)`;
 * 0 below `cleanLoss`. Pure: no hysteresis (see {@link AdaptiveParity}).
 */
export function parityFor(
  p: number,
  k: number,
  target = 1e-3,
  cleanLoss = 0.005,
  maxParity = 32,
): number {
  if (!(p >= cleanLoss)) return 0; // also NaN
  const cap = Math.max(0, Math.min(k, maxParity, 255 - k));
  for (let m = 1; m < cap; m++) {
    if (binomialTail(k + m, m, p) <= target) return m;
  }
  return cap;
}

/** Clamps a measurement to [0, 1]; non-numbers become null. */
function clampLoss(x: number): number | null {
  if (typeof x !== "number" || Number.isNaN(x)) return null;
  return x < 0 ? 0 : x > 1 ? 1 : x;
}

/**
 * The ratio controller of one sending direction: feed it loss rates with
 * {@link update}, ask it for the parity count of a group with
 * {@link parityFor}.
 */
export class AdaptiveParity {
  readonly #target: number;
  readonly #cleanLoss: number;
  readonly #maxParity: number;
  readonly #hold: number;
  readonly #fall: number;
  #effective = 0;
  #below = 0;
  #belowMax = 0;

  /** A controller that starts on a clean path (no parity). */
  constructor(options: AdaptiveParityOptions = {}) {
    this.#target = options.target ?? 1e-3;
    this.#cleanLoss = options.cleanLoss ?? 0.005;
    this.#maxParity = options.maxParity ?? 32;
    this.#hold = options.holdUpdates ?? 3;
    this.#fall = options.fallFactor ?? 1.5;
    if (!(this.#target > 0 && this.#target < 1)) throw new RangeError("target must be in (0, 1)");
    if (!(this.#cleanLoss >= 0 && this.#cleanLoss < 1)) {
      throw new RangeError("cleanLoss must be in [0, 1)");
    }
    if (!Number.isInteger(this.#maxParity) || this.#maxParity < 0) {
      throw new RangeError("maxParity must be an integer ≥ 0");
    }
    if (!Number.isInteger(this.#hold) || this.#hold < 1) {
      throw new RangeError("holdUpdates must be an integer ≥ 1");
    }
    if (!(this.#fall >= 1)) throw new RangeError("fallFactor must be ≥ 1");
  }

  /** The loss rate the ratio follows now (after hysteresis). */
  get effectiveLoss(): number {
    return this.#effective;
  }

  /** Takes one measured loss rate (a fraction; clamped to [0, 1], NaN ignored). */
  update(loss: number): void {
    const p = clampLoss(loss);
    if (p === null) return;
    if (p >= this.#effective) {
      this.#effective = p;
      this.#below = 0;
      return;
    }
    if (p * this.#fall >= this.#effective) {
      this.#below = 0; // within the band: hold
      return;
    }
    this.#belowMax = this.#below === 0 ? p : Math.max(this.#belowMax, p);
    if (++this.#below >= this.#hold) {
      this.#effective = this.#belowMax;
      this.#below = 0;
    }
  }

  /** The parity count for a group of `k` data shards at the effective loss rate. */
  parityFor(k: number): number {
    return parityFor(this.#effective, k, this.#target, this.#cleanLoss, this.#maxParity);
  }
}
