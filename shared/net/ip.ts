/**
 * IP address literals: parsing and canonical formatting (RFC 5952 for IPv6).
 * @module
 */

/** Parses dotted-quad IPv4 (`a.b.c.d`, decimal, no leading zeros) to 4 bytes, or `null`. */
export function parseIPv4(s: string): Uint8Array | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    out[i] = v;
  }
  return out;
}

/**
 * Parses an IPv6 address in text form (RFC 4291 §2.2, with `::` and a
 * trailing dotted IPv4 allowed; no brackets, no zone) to 16 bytes, or `null`.
 */
export function parseIPv6(s: string): Uint8Array | null {
  if (s.length < 2 || s.length > 45) return null;
  const out = new Uint8Array(16);
  const dbl = s.indexOf("::");
  if (dbl !== -1 && s.indexOf("::", dbl + 1) !== -1) return null;
  const parseGroups = (part: string, allowV4: boolean): number[] | null => {
    if (part === "") return [];
    const items = part.split(":");
    const groups: number[] = [];
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      if (allowV4 && i === items.length - 1 && it.includes(".")) {
        const v4 = parseIPv4(it);
        if (!v4) return null;
        groups.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(it)) return null;
        groups.push(parseInt(it, 16));
      }
    }
    return groups;
  };
  let groups: number[];
  if (dbl === -1) {
    const g = parseGroups(s, true);
    if (!g || g.length !== 8) return null;
    groups = g;
  } else {
    const head = parseGroups(s.slice(0, dbl), false);
    const tail = parseGroups(s.slice(dbl + 2), true);
    if (!head || !tail || head.length + tail.length > 7) return null;
    groups = [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
  }
  for (let i = 0; i < 8; i++) {
    out[2 * i] = groups[i] >> 8;
    out[2 * i + 1] = groups[i] & 0xff;
  }
  return out;
}

/**
 * Formats 16 bytes as an IPv6 address in RFC 5952 canonical form: lowercase
 * hex, no leading zeros, the longest run (first if tied) of two or more zero
 * groups compressed to `::`, and IPv4-mapped addresses (`::ffff:0:0/96`) in
 * mixed notation (`::ffff:192.0.2.1`). No brackets.
 */
export function formatIPv6(b: Uint8Array): string {
  if (b.length !== 16) throw new RangeError("IPv6 address must be 16 bytes");
  let mapped = b[10] === 0xff && b[11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (b[i] !== 0) mapped = false;
  if (mapped) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[2 * i] << 8) | b[2 * i + 1]);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) return g.map((x) => x.toString(16)).join(":");
  const head = g.slice(0, bestStart).map((x) => x.toString(16)).join(":");
  const tail = g.slice(bestStart + bestLen).map((x) => x.toString(16)).join(":");
  return `${head}::${tail}`;
}

/** `host:port` of a socket address, IPv6 in brackets ("[2001:db8::1]:443"). */
export function formatNetAddr(a: { readonly hostname: string; readonly port: number }): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

/** Same host, allowing for IPv4-mapped IPv6 spellings ("::ffff:1.2.3.4" is "1.2.3.4"). */
export function sameHost(a: string, b: string): boolean {
  if (a === b) return true;
  const strip = (h: string) => (h.startsWith("::ffff:") ? h.slice(7) : h);
  return strip(a) === strip(b);
}

/** Same host ({@link sameHost}) and port. */
export function sameNetAddr(a: Deno.NetAddr, b: Deno.NetAddr): boolean {
  return a.port === b.port && sameHost(a.hostname, b.hostname);
}
