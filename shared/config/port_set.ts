/**
 * A set of ports as an operator writes it: `[18080, "20000-20100"]` (the
 * server's `allowInPorts`, docs/mappings.md). Empty: no port.
 * @module
 */

/** Ports as sorted, merged inclusive ranges. */
export class PortSet {
  private constructor(readonly ranges: readonly (readonly [number, number])[]) {}

  /** No port at all. */
  static readonly EMPTY: PortSet = new PortSet([]);

  /** The set of `ranges` (merged). */
  static of(ranges: readonly (readonly [number, number])[]): PortSet {
    const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
    const out: [number, number][] = [];
    for (const [lo, hi] of sorted) {
      const last = out[out.length - 1];
      if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
      else out.push([lo, hi]);
    }
    return new PortSet(out);
  }

  /** The union of two sets. */
  union(other: PortSet): PortSet {
    return PortSet.of([...this.ranges, ...other.ranges]);
  }

  /** True when `port` is in the set. */
  has(port: number): boolean {
    for (const [lo, hi] of this.ranges) if (port >= lo && port <= hi) return true;
    return false;
  }

  /** As written in a config (`[18080, "20000-20100"]`). */
  toJSON(): (number | string)[] {
    return this.ranges.map(([lo, hi]) => (lo === hi ? lo : `${lo}-${hi}`));
  }
}

/** One entry (`18080`, `"18080"`, `"20000-20100"`), or a string saying what is wrong. */
export function parsePortEntry(v: unknown): [number, number] | string {
  const ok = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535;
  if (typeof v === "number") return ok(v) ? [v, v] : "a port is 1..65535";
  if (typeof v !== "string") return 'expected a port or "low-high"';
  const m = /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(v);
  if (!m) return 'expected a port or "low-high"';
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (!ok(lo) || !ok(hi)) return "a port is 1..65535";
  if (hi < lo) return "the range's high end is below its low end";
  return [lo, hi];
}

/** Parses a list; `issues` gets `[path[i], message]` for each bad entry. */
export function parsePortSet(
  v: unknown,
  path: string,
  issues: { path: string; message: string }[],
): PortSet {
  const list = typeof v === "string" ? v.split(",") : v;
  if (!Array.isArray(list)) {
    issues.push({ path, message: 'expected an array of ports and "low-high" ranges' });
    return PortSet.EMPTY;
  }
  const ranges: [number, number][] = [];
  list.forEach((e, i) => {
    const r = parsePortEntry(e);
    if (typeof r === "string") issues.push({ path: `${path}[${i}]`, message: r });
    else ranges.push(r);
  });
  return PortSet.of(ranges);
}
