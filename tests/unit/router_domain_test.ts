import { DomainSet, normalizeDomain } from "../../client/router/domain_set.ts";
import { assert, assertEquals } from "../support/assert.ts";

function suffixes(...names: string[]): DomainSet<string> {
  const s = new DomainSet<string>();
  for (const n of names) assert(s.add(n, "suffix", n), `add ${n}`);
  return s;
}

Deno.test("domain set: a suffix matches itself and names under it on label boundaries", () => {
  const s = suffixes("local.lan", "trusted-site.com");
  assertEquals(s.lookup("local.lan"), "local.lan");
  assertEquals(s.lookup("a.local.lan"), "local.lan");
  assertEquals(s.lookup("x.y.local.lan"), "local.lan");
  assertEquals(s.lookup("www.trusted-site.com"), "trusted-site.com");
  assertEquals(s.lookup("evillocal.lan"), undefined);
  assertEquals(s.lookup("local.lan.evil.com"), undefined);
  assertEquals(s.lookup("lan"), undefined);
  assertEquals(s.lookup("ocal.lan"), undefined);
  assertEquals(s.lookup("untrusted-site.com"), undefined);
  assertEquals(s.has("a.local.lan"), true);
  assertEquals(s.has("evillocal.lan"), false);
});

Deno.test("domain set: case and one trailing dot are ignored, both in entries and lookups", () => {
  const s = suffixes("Local.LAN.");
  assertEquals(s.lookup("local.lan"), "Local.LAN.");
  assertEquals(s.lookup("A.LOCAL.lan"), "Local.LAN.");
  assertEquals(s.lookup("a.local.lan."), "Local.LAN.");
  assertEquals(s.lookup("A.Local.Lan."), "Local.LAN.");
  assertEquals(s.lookup("a.local.lan.."), undefined, "two trailing dots are not a name");
  assertEquals(s.lookup("."), undefined);
  assertEquals(s.lookup(""), undefined);
  assertEquals(s.size, 1);
});

Deno.test("domain set: exact entries match only the name itself", () => {
  const s = new DomainSet<number>();
  s.add("example.com", "exact", 1);
  assertEquals(s.lookup("example.com"), 1);
  assertEquals(s.lookup("EXAMPLE.com."), 1);
  assertEquals(s.lookup("www.example.com"), undefined);
  assertEquals(s.lookup("com"), undefined);
});

Deno.test("domain set: most specific wins in lookup; collect returns every match", () => {
  const s = new DomainSet<string>();
  s.add("com", "suffix", "com");
  s.add("example.com", "suffix", "example.com/suffix");
  s.add("example.com", "exact", "example.com/exact");
  s.add("a.example.com", "suffix", "a.example.com");
  assertEquals(s.size, 4);
  assertEquals(s.lookup("example.com"), "example.com/exact");
  assertEquals(s.lookup("b.example.com"), "example.com/suffix");
  assertEquals(s.lookup("x.a.example.com"), "a.example.com");
  assertEquals(s.lookup("other.com"), "com");
  const out: string[] = [];
  assertEquals(s.collect("x.a.example.com", out), 3);
  assertEquals(out.slice(0, 3), ["com", "example.com/suffix", "a.example.com"]);
  assertEquals(s.collect("Example.Com", out), 3);
  assertEquals(out.slice(0, 3), ["com", "example.com/suffix", "example.com/exact"]);
  assertEquals(s.collect("example.org", out), 0);
  assertEquals(s.collect("a.example.com", undefined), 3);
});

Deno.test("domain set: a second add of the same name and mode replaces the value", () => {
  const s = new DomainSet<number>();
  s.add("a.b", "suffix", 1);
  s.add("A.B.", "suffix", 2);
  assertEquals(s.size, 1);
  assertEquals(s.lookup("x.a.b"), 2);
  const seen: string[] = [];
  s.add("a.b", "exact", 3);
  s.forEach((name, mode, v) => seen.push(`${name} ${mode} ${v}`));
  assertEquals(seen, ["a.b exact 3", "a.b suffix 2"]);
});

Deno.test("domain set: invalid names are refused; non-ASCII lookups match nothing", () => {
  const s = new DomainSet<number>();
  for (
    const bad of [
      "",
      ".",
      "*.example.com",
      ".example.com",
      "ex ample.com",
      "exämple.com",
      "a..b",
      "-a.com",
      "a-.com",
      "1.2.3.4",
      "x".repeat(64) + ".com",
    ]
  ) {
    assertEquals(s.add(bad, "suffix", 1), false, JSON.stringify(bad));
  }
  assertEquals(s.size, 0);
  assert(s.add("xn--exmple-cua.com", "suffix", 7));
  assertEquals(s.lookup("www.xn--exmple-cua.com"), 7);
  assertEquals(s.lookup("www.exämple.com"), undefined);
  assertEquals(s.lookup("WWW.XN--EXMPLE-CUA.COM"), 7);
});

Deno.test("domain set: normalizeDomain", () => {
  assertEquals(normalizeDomain("Example.COM."), "example.com");
  assertEquals(normalizeDomain("_srv.example.com"), "_srv.example.com");
  assertEquals(normalizeDomain("localhost"), "localhost");
  assertEquals(normalizeDomain("1.2.3.4"), null);
  assertEquals(normalizeDomain("a".repeat(63) + ".com"), "a".repeat(63) + ".com");
  assertEquals(
    normalizeDomain("İ.com"),
    null,
    "non-ASCII that lowercases to ASCII-ish stays invalid",
  );
});

Deno.test("domain set: many entries survive table growth and hash collisions in probing", () => {
  const s = new DomainSet<number>();
  for (let i = 0; i < 5000; i++) s.add(`d${i}.example`, "suffix", i);
  assertEquals(s.size, 5000);
  for (let i = 0; i < 5000; i += 97) {
    assertEquals(s.lookup(`www.d${i}.example`), i);
    assertEquals(s.lookup(`d${i}x.example`), undefined);
  }
  assertEquals(s.lookup("example"), undefined);
});
