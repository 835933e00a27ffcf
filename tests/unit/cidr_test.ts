import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { formatIPv6, parseIPv4, parseIPv6 } from "../../shared/net/ip.ts";
import {
  formatIp,
  formatPrefix,
  maskPrefix,
  parseCidr,
  parseIp,
  parseIpInto,
  parsePrefix,
  type Prefix,
  prefixContains,
  PrefixTable,
} from "../../shared/net/cidr.ts";

function ip(text: string): Uint8Array {
  const a = parseIp(text);
  if (!a) throw new Error(`test address ${text} did not parse`);
  return a;
}

function cidr(text: string): Prefix {
  const p = parseCidr(text);
  if (!p) throw new Error(`test prefix ${text} did not parse`);
  return p;
}

Deno.test("cidr: parseIp maps IPv4 into ::ffff:0:0/96 and reads IPv6 with or without brackets", () => {
  assertEquals(formatIPv6(ip("192.0.2.1")), "::ffff:192.0.2.1");
  assertEquals(ip("192.0.2.1"), ip("::ffff:192.0.2.1"));
  assertEquals(ip("192.0.2.1"), ip("::FFFF:c000:0201"));
  assertEquals(formatIPv6(ip("[2001:db8::1]")), "2001:db8::1");
  assertEquals(formatIPv6(ip("::")), "::");
  assertEquals(formatIPv6(ip("::1")), "::1");
  assertEquals(formatIPv6(ip("1::")), "1::");
  assertEquals(formatIPv6(ip("1:2:3:4:5:6:7:8")), "1:2:3:4:5:6:7:8");
  assertEquals(formatIPv6(ip("1:2:3:4:5:6:1.2.3.4")), "1:2:3:4:5:6:102:304");
  assertEquals(formatIPv6(ip("64:ff9b::10.0.0.1")), "64:ff9b::a00:1");
  assertEquals(formatIp(ip("0.0.0.0")), "0.0.0.0");
  assertEquals(formatIp(ip("255.255.255.255")), "255.255.255.255");
  assertEquals(formatIp(ip("::ffff:127.0.0.1")), "127.0.0.1");
  const out = new Uint8Array(16);
  assertEquals(parseIpInto("10.0.0.1", out), 4);
  assertEquals(parseIpInto("::ffff:10.0.0.1", out), 6);
  assertEquals(parseIpInto("nope", out), 0);
});

Deno.test("cidr: parseIp rejects malformed and ambiguous text", () => {
  for (
    const bad of [
      "",
      "1",
      "127.1",
      "1.2.3",
      "1.2.3.4.5",
      "256.0.0.1",
      "01.2.3.4",
      "1.2.3.04",
      "0x7f.0.0.1",
      "1.2.3.4 ",
      " 1.2.3.4",
      "1.2.3.",
      ".1.2.3",
      "1..2.3",
      "-1.2.3.4",
      ":",
      ":::",
      "1:::2",
      "1::2::3",
      ":1::2",
      "1::2:",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7::8",
      "12345::",
      "g::1",
      "::1.2.3",
      "::1.2.3.4.5",
      "1.2.3.4::",
      "1:2:3:4:5:6:7:1.2.3.4",
      "fe80::1%eth0",
      "[::1",
      "::1]",
      "[1.2.3.4]",
      "[]",
      "[::1]:80",
      "a".repeat(60),
    ]
  ) {
    assertEquals(parseIp(bad), null, `accepted ${JSON.stringify(bad)}`);
  }
});

Deno.test("cidr: parseIp agrees with shared/net/ip.ts on random and edge inputs", () => {
  const samples = [
    "::",
    "::1",
    "1::",
    "::ffff:1.2.3.4",
    "2001:db8:0:0:1:0:0:1",
    "2001:DB8::8:800:200C:417A",
    "ff02::1:ff00:1",
    "1:0:0:0:0:0:0:0",
    "0:0:0:0:0:0:0:1",
    "::0:0:1",
    "fe80::",
  ];
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) >>> 0);
  for (let i = 0; i < 2000; i++) {
    const groups: string[] = [];
    for (let g = 0; g < 8; g++) groups.push((next() % 3 === 0 ? 0 : next() & 0xffff).toString(16));
    const full = groups.join(":");
    samples.push(full, formatIPv6(parseIPv6(full)!));
    samples.push(`${next() & 255}.${next() & 255}.${next() & 255}.${next() & 255}`);
  }
  for (const s of samples) {
    const mine = parseIp(s);
    const v4 = parseIPv4(s);
    const ref = v4
      ? new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4])
      : parseIPv6(s);
    assertEquals(mine, ref, s);
  }
});

Deno.test("cidr: parsePrefix lengths, host prefixes and the family's bounds", () => {
  assertEquals(cidr("10.0.0.0/8").bits, 104);
  assertEquals(cidr("0.0.0.0/0").bits, 96);
  assertEquals(cidr("1.2.3.4").bits, 128);
  assertEquals(cidr("1.2.3.4/32").bits, 128);
  assertEquals(cidr("::/0").bits, 0);
  assertEquals(cidr("::1").bits, 128);
  assertEquals(cidr("[2001:db8::]/32").bits, 32);
  assertEquals(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
  assertEquals(formatPrefix(cidr("10.0.0.0/8")), "10.0.0.0/8");
  assertEquals(formatPrefix(cidr("::ffff:0:0/96")), "0.0.0.0/0");
  assertEquals(formatPrefix(cidr("2001:db8::/32")), "2001:db8::/32");
  assertEquals(formatPrefix(cidr("::/0")), "::/0");
  assertEquals(formatPrefix(cidr("fe80::/10")), "fe80::/10");
  for (const bad of ["10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/08", "10.0.0.0/-1", "/8"]) {
    assertEquals(parseCidr(bad), null, bad);
  }
  const r = parsePrefix("10.0.0.0/x8");
  assert(!r.ok && r.error === "prefix length must be 0..32", JSON.stringify(r));
  const r6 = parsePrefix("::/200");
  assert(!r6.ok && r6.error === "prefix length must be 0..128");
  const junk = parsePrefix("secret-password");
  assert(!junk.ok && !junk.error.includes("secret"), "messages never echo the input");
});

Deno.test("cidr: host bits set are rejected with the network named", () => {
  const r = parsePrefix("192.168.1.1/16");
  assert(!r.ok);
  assertEquals(r.error, "host bits are set past /16 (the network is 192.168.0.0/16)");
  const r6 = parsePrefix("fe80::1/10");
  assert(!r6.ok);
  assertEquals(r6.error, "host bits are set past /10 (the network is fe80::/10)");
  assertEquals(parseCidr("10.0.0.1/31"), null);
  assert(parseCidr("10.0.0.2/31") !== null);
  assertEquals(maskPrefix(ip("192.168.1.1"), 112), cidr("192.168.0.0/16"));
  assertEquals(maskPrefix(ip("fe80::1"), 10), cidr("fe80::/10"));
  assertEquals(maskPrefix(ip("1.2.3.4"), 0), cidr("::/0"));
  assertThrows(() => maskPrefix(ip("1.2.3.4"), 129), RangeError);
});

Deno.test("cidr: prefixContains", () => {
  assert(prefixContains(cidr("10.0.0.0/8"), ip("10.255.0.1")));
  assert(prefixContains(cidr("10.0.0.0/8"), ip("::ffff:10.1.2.3")));
  assert(!prefixContains(cidr("10.0.0.0/8"), ip("11.0.0.0")));
  assert(prefixContains(cidr("::/0"), ip("1.2.3.4")));
  assert(prefixContains(cidr("0.0.0.0/0"), ip("1.2.3.4")));
  assert(!prefixContains(cidr("0.0.0.0/0"), ip("2001:db8::1")));
  assert(prefixContains(cidr("fe80::/10"), ip("febf::1")));
  assert(!prefixContains(cidr("fe80::/10"), ip("fec0::1")));
});

Deno.test("cidr: PrefixTable longest-prefix match with overlaps, /0, /32 and /128", () => {
  const t = new PrefixTable<string>(2);
  assertEquals(t.lookup(ip("1.2.3.4")), undefined);
  t.insert(cidr("10.0.0.0/8"), "10/8");
  t.insert(cidr("10.1.0.0/16"), "10.1/16");
  t.insert(cidr("10.1.2.3/32"), "host");
  t.insert(cidr("2001:db8::/32"), "doc");
  t.insert(cidr("2001:db8::1/128"), "doc-host");
  assertEquals(t.size, 5);
  assertEquals(t.lookup(ip("10.2.0.0")), "10/8");
  assertEquals(t.lookup(ip("10.1.9.9")), "10.1/16");
  assertEquals(t.lookup(ip("10.1.2.3")), "host");
  assertEquals(t.lookup(ip("::ffff:10.1.2.3")), "host");
  assertEquals(t.lookup(ip("10.1.2.4")), "10.1/16");
  assertEquals(t.lookup(ip("11.0.0.0")), undefined);
  assertEquals(t.lookup(ip("2001:db8::1")), "doc-host");
  assertEquals(t.lookup(ip("2001:db8::2")), "doc");
  assertEquals(t.lookup(ip("2001:db9::")), undefined);
  // The IPv4 part of the space is not an IPv6 prefix match of ::/96 and vice versa.
  assertEquals(t.lookup(ip("::10.1.2.3")), undefined);
  t.insert(cidr("0.0.0.0/0"), "any4");
  assertEquals(t.lookup(ip("11.0.0.0")), "any4");
  assertEquals(t.lookup(ip("2001:db9::")), undefined);
  t.insert(cidr("::/0"), "any");
  assertEquals(t.lookup(ip("2001:db9::")), "any");
  assertEquals(t.lookup(ip("11.0.0.0")), "any4");
  assertEquals(t.lookup(ip("::10.1.2.3")), "any");
  assertEquals(t.lookup(ip("10.1.2.3")), "host");
  // Re-insert replaces.
  assertEquals(t.insert(cidr("10.0.0.0/8"), "ten"), "10/8");
  assertEquals(t.size, 7);
  assertEquals(t.lookup(ip("10.2.0.0")), "ten");
  assertEquals(t.lookupV4(0x0a020000), "ten");
  assertEquals(t.lookupV4(0x0a010203), "host");
  assertEquals(t.lookupWords(0x20010db8, 0, 0, 1), "doc-host");
  // Exact get.
  assertEquals(t.get(cidr("10.1.0.0/16")), "10.1/16");
  assertEquals(t.get(cidr("10.1.0.0/17")), undefined);
  assertEquals(t.get(cidr("::/0")), "any");
  assertEquals(t.get(cidr("2001:db8::/33")), undefined);
});

Deno.test("cidr: PrefixTable prefixes covering the IPv4-mapped range from IPv6 apply to IPv4", () => {
  const t = new PrefixTable<string>();
  t.insert(cidr("::/64"), "low");
  t.insert(cidr("::fffe:0:0/95"), "v4-and-neighbour");
  assertEquals(t.lookup(ip("8.8.8.8")), "v4-and-neighbour");
  assertEquals(t.lookup(ip("::fffe:1:1")), "v4-and-neighbour");
  assertEquals(t.lookup(ip("::1")), "low");
  t.insert(cidr("8.0.0.0/7"), "eight");
  assertEquals(t.lookup(ip("9.1.1.1")), "eight");
  assertEquals(t.lookup(ip("10.1.1.1")), "v4-and-neighbour");
});

Deno.test("cidr: PrefixTable collect lists every match, least specific first", () => {
  const t = new PrefixTable<string>();
  t.insert(cidr("10.1.2.0/24"), "c");
  t.insert(cidr("::/0"), "a");
  t.insert(cidr("10.0.0.0/8"), "b");
  t.insert(cidr("10.1.2.3"), "d");
  t.insert(cidr("10.1.3.0/24"), "x");
  const out: string[] = [];
  assertEquals(t.collect(ip("10.1.2.3"), out), 4);
  assertEquals(out, ["a", "b", "c", "d"]);
  assertEquals(t.collect(ip("10.9.9.9"), out), 2);
  assertEquals(out.slice(0, 2), ["a", "b"]);
  assertEquals(t.collect(ip("2001:db8::"), out), 1);
  assertEquals(out[0], "a");
});

Deno.test("cidr: PrefixTable entries come back in address order", () => {
  const t = new PrefixTable<number>();
  const texts = ["10.1.0.0/16", "2001:db8::/32", "10.0.0.0/8", "::/0", "10.1.2.3"];
  texts.forEach((s, i) => t.insert(cidr(s), i));
  assertEquals([...t.entries()].map(([p, v]) => `${formatPrefix(p)}=${v}`), [
    "::/0=3",
    "10.0.0.0/8=2",
    "10.1.0.0/16=0",
    "10.1.2.3/32=4",
    "2001:db8::/32=1",
  ]);
});

Deno.test("cidr: PrefixTable rejects prefixes with host bits or bad lengths", () => {
  const t = new PrefixTable<number>();
  assertThrows(() => t.insert({ addr: ip("10.0.0.1"), bits: 104 }, 1), RangeError);
  assertThrows(() => t.insert({ addr: ip("10.0.0.0"), bits: 129 }, 1), RangeError);
  assertThrows(() => t.insert({ addr: new Uint8Array(4), bits: 0 }, 1), RangeError);
  assertEquals(t.size, 0);
});

Deno.test("cidr: PrefixTable matches a brute-force scan on random mixed prefixes", () => {
  let seed = 12345;
  const rnd = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const randomAddr = (): Uint8Array => {
    const a = new Uint8Array(16);
    const kind = rnd() % 4;
    if (kind < 2) {
      a[10] = a[11] = 0xff;
      // Few distinct top octets so that prefixes overlap a lot.
      a[12] = [10, 127, 192, 8][rnd() % 4];
      for (let i = 13; i < 16; i++) a[i] = rnd() & 0xff;
    } else if (kind === 2) {
      a[0] = 0x20;
      a[1] = 0x01;
      for (let i = 2; i < 16; i++) a[i] = rnd() % 3 === 0 ? 0 : rnd() & 0xff;
    } else {
      for (let i = 0; i < 16; i++) a[i] = rnd() % 4 === 0 ? 0 : rnd() & 0xff;
    }
    return a;
  };
  const prefixes: Prefix[] = [];
  const t = new PrefixTable<number>(4);
  for (let i = 0; i < 3000; i++) {
    const a = randomAddr();
    const v4 = a[10] === 0xff && a[0] === 0;
    const bits = v4 ? 96 + (rnd() % 33) : rnd() % 129;
    const p = maskPrefix(a, bits);
    t.insert(p, prefixes.length);
    prefixes.push(p);
  }
  const brute = (a: Uint8Array): number | undefined => {
    let best = -1;
    let bestBits = -1;
    for (let i = 0; i < prefixes.length; i++) {
      const p = prefixes[i];
      // A later insert of the same prefix replaces the value: keep the last.
      if (prefixContains(p, a) && p.bits >= bestBits) {
        best = i;
        bestBits = p.bits;
      }
    }
    return best === -1 ? undefined : best;
  };
  const out: number[] = [];
  for (let i = 0; i < 3000; i++) {
    // Half the probes inside a stored prefix, half random.
    const a = randomAddr();
    if (i % 2 === 0) {
      const p = prefixes[rnd() % prefixes.length];
      for (let b = 0; b < p.bits; b++) {
        const m = 0x80 >> (b & 7);
        a[b >> 3] = (a[b >> 3] & ~m) | (p.addr[b >> 3] & m);
      }
    }
    const want = brute(a);
    assertEquals(t.lookup(a), want, formatIp(a));
    const n = t.collect(a, out);
    if (want === undefined) assertEquals(n, 0);
    else assertEquals(out[n - 1], want);
  }
  for (const p of prefixes.slice(0, 200)) assert(t.get(p) !== undefined);
  assertEquals(t.size, new Set(prefixes.map(formatPrefix)).size);
});

Deno.test("cidr: PrefixTable stays exact when inserts and lookups interleave", () => {
  let seed = 99;
  const rnd = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const randomAddr = (): Uint8Array => {
    const a = new Uint8Array(16);
    if (rnd() % 2 === 0) {
      a[10] = a[11] = 0xff;
      a[12] = [10, 11, 192][rnd() % 3];
      for (let i = 13; i < 16; i++) a[i] = rnd() % 2 === 0 ? 0 : rnd() & 0xff;
    } else {
      a[0] = rnd() % 2 === 0 ? 0 : 0x20;
      for (let i = 1; i < 16; i++) a[i] = rnd() % 2 === 0 ? 0 : rnd() & 0xff;
    }
    return a;
  };
  const t = new PrefixTable<number>();
  const stored: Prefix[] = [];
  for (let i = 0; i < 400; i++) {
    const a = randomAddr();
    const v4 = a[10] === 0xff && a[0] === 0;
    // Short prefixes now and then: they take the deferred-rebuild path.
    const bits = v4 ? 96 + (i % 10 === 0 ? rnd() % 9 : 8 + (rnd() % 25)) : rnd() % 129;
    const p = maskPrefix(a, bits);
    t.insert(p, i);
    stored.push(p);
    for (let k = 0; k < 20; k++) {
      const probe = k % 2 === 0 ? randomAddr() : stored[rnd() % stored.length].addr;
      let want: number | undefined;
      let wantBits = -1;
      stored.forEach((s, j) => {
        if (prefixContains(s, probe) && s.bits >= wantBits) {
          want = j;
          wantBits = s.bits;
        }
      });
      assertEquals(t.lookup(probe), want, `after ${i + 1} inserts, ${formatIp(probe)}`);
    }
  }
});

Deno.test("cidr: PrefixTable with its jump table keeps IPv6 prefixes that cover IPv4", () => {
  const t = new PrefixTable<string>();
  for (let i = 0; i < 300; i++) t.insert(cidr(`10.${i >> 8}.${i & 255}.0/24`), `v4-${i}`);
  assertEquals(t.lookup(ip("10.0.5.1")), "v4-5");
  assertEquals(t.lookup(ip("8.8.8.8")), undefined);
  t.insert(cidr("::/64"), "low");
  assertEquals(t.lookup(ip("8.8.8.8")), "low");
  assertEquals(t.lookup(ip("10.0.5.1")), "v4-5");
  t.insert(cidr("::fffe:0:0/95"), "cover");
  assertEquals(t.lookup(ip("8.8.8.8")), "cover");
  assertEquals(t.lookup(ip("::fffe:1:2")), "cover");
  assertEquals(t.lookup(ip("::1")), "low");
  t.insert(cidr("8.0.0.0/8"), "eight");
  assertEquals(t.lookup(ip("8.8.8.8")), "eight");
  assertEquals(t.lookup(ip("9.8.8.8")), "cover");
  t.insert(cidr("::/0"), "any");
  t.insert(cidr("2001:db8::/32"), "doc");
  assertEquals(t.lookup(ip("2001:db8::1")), "doc");
  assertEquals(t.lookup(ip("2001:db9::1")), "any");
  assertEquals(t.lookup(ip("9.8.8.8")), "cover");
  assertEquals(t.lookup(ip("10.1.43.7")), "v4-299");
  assertEquals(t.lookup(ip("10.1.44.7")), "cover");
});
