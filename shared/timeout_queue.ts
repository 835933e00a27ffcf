/**
 * Timeouts of one fixed duration for many short-lived operations (a proxy
 * handshake, a stream's open request, a dial) on a single timer. Entries
 * expire in the order they were armed, so the queue is a doubly linked FIFO:
 * arming and cancelling are O(1) and allocate nothing, and one (unref'd)
 * timer at a time waits for the head — at most one timer per `ms` however many
 * operations come and go. A `setTimeout`/`clearTimeout` pair per operation
 * cost more than the rest of a short connection's bookkeeping.
 * @module
 */

/**
 * Something that can sit in a {@link TimeoutQueue}: extend it (or hold one)
 * and implement {@link TimeoutLink.onTimeout}. A link is in at most one queue.
 */
export abstract class TimeoutLink {
  /** @internal */ tPrev: TimeoutLink | null = null;
  /** @internal */ tNext: TimeoutLink | null = null;
  /** @internal monotonic ms at which it expires. */ tAt = 0;
  /** @internal */ tQueue: TimeoutQueue | null = null;

  /** Called once when the timeout passes without a {@link TimeoutQueue.cancel}. */
  abstract onTimeout(): void;

  /** True while armed in a queue. */
  get armed(): boolean {
    return this.tQueue !== null;
  }

  /** Removes the link from whatever queue holds it (no-op when not armed). */
  disarm(): void {
    this.tQueue?.cancel(this);
  }
}

/** A FIFO of {@link TimeoutLink}s that all expire `ms` after being armed. */
export class TimeoutQueue {
  #head: TimeoutLink | null = null;
  #tail: TimeoutLink | null = null;
  #size = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #now: () => number;

  /** @param ms the timeout of every entry; `now` is the monotonic clock (default `performance.now`). */
  constructor(readonly ms: number, now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Entries armed now. */
  get size(): number {
    return this.#size;
  }

  /** Arms `link` to expire `ms` from now (re-arming moves it to the back; another queue gives it up first). */
  arm(link: TimeoutLink): void {
    link.tQueue?.cancel(link);
    link.tAt = this.#now() + this.ms;
    link.tQueue = this;
    link.tPrev = this.#tail;
    link.tNext = null;
    if (this.#tail) this.#tail.tNext = link;
    else this.#head = link;
    this.#tail = link;
    this.#size++;
    if (this.#timer === undefined) this.#schedule(link.tAt);
  }

  /** Removes `link` if this queue holds it. */
  cancel(link: TimeoutLink): void {
    if (link.tQueue !== this) return;
    const p = link.tPrev;
    const n = link.tNext;
    if (p) p.tNext = n;
    else this.#head = n;
    if (n) n.tPrev = p;
    else this.#tail = p;
    link.tPrev = link.tNext = null;
    link.tQueue = null;
    this.#size--;
    // The timer stays: when it fires it finds the new head (or nothing). Most
    // entries are cancelled within microseconds, so clearing and re-creating
    // it here would bring back the cost of a timer per operation.
  }

  /** Cancels every entry without calling them, and stops the timer. */
  clear(): void {
    while (this.#head) this.cancel(this.#head);
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  #schedule(at: number): void {
    const t = setTimeout(this.#fire, Math.max(0, at - this.#now()));
    // Only the operations it times out keep a process alive, never the timer itself.
    const node = t as unknown as { unref?: () => void };
    if (typeof node.unref === "function") node.unref();
    else Deno.unrefTimer(t as unknown as number);
    this.#timer = t;
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    // A timer may fire a little early; 1 ms of slack avoids a second wake-up.
    const now = this.#now() + 1;
    let h: TimeoutLink | null;
    while ((h = this.#head) !== null && h.tAt <= now) {
      this.cancel(h);
      try {
        h.onTimeout();
      } catch {
        // One faulty handler must not stop the others from expiring.
      }
    }
    if (this.#head && this.#timer === undefined) this.#schedule(this.#head.tAt);
  };
}
