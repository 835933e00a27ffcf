import { assert, assertEquals } from "../support/assert.ts";
import { clampMss, mssFor } from "../../shared/l3/mss_clamp.ts";
import {
  checksumValid,
  internetChecksum,
  pseudoHeaderSum,
} from "../../shared/netstack/wire/checksum.ts";
import { prng } from "../support/simnet.ts";

/** An IPv4 or IPv6 SYN with `options` (padded to 4 bytes), checksum correct. */
function syn(version: 4 | 6, options: number[], flags = 0x02): Uint8Array {
  const opts = [...options];
  while (opts.length % 4) opts.push(0);
  const tcpLen = 20 + opts.length;
  const ipLen = version === 4 ? 20 : 40;
  const p = new Uint8Array(ipLen + tcpLen);
  const src = version === 4 ? [10, 77, 0, 2] : [0xfd, 0x77, ...Array(13).fill(0), 2];
  const dst = version === 4 ? [10, 77, 0, 3] : [0xfd, 0x77, ...Array(13).fill(0), 3];
  if (version === 4) {
    p.set([0x45, 0, 0, p.length, 0, 0, 0x40, 0, 64, 6]);
    p.set(src, 12);
    p.set(dst, 16);
  } else {
    p.set([0x60, 0, 0, 0, 0, tcpLen, 6, 64]);
    p.set(src, 8);
    p.set(dst, 24);
  }
  const t = ipLen;
  p.set([0x9c, 0x40, 0x1f, 0x90, 1, 2, 3, 4, 0, 0, 0, 0, (tcpLen / 4) << 4, flags, 0xff, 0xff], t);
  p.set(opts, t + 20);
  const ph = pseudoHeaderSum(new Uint8Array(src), new Uint8Array(dst), 6, tcpLen);
  const c = internetChecksum(p, t, p.length, ph);
  p[t + 16] = c >> 8;
  p[t + 17] = c & 0xff;
  return p;
}

function valid(p: Uint8Array): boolean {
  const v6 = p[0] >> 4 === 6;
  const t = v6 ? 40 : 20;
  const src = v6 ? p.subarray(8, 24) : p.subarray(12, 16);
  const dst = v6 ? p.subarray(24, 40) : p.subarray(16, 20);
  return checksumValid(p, t, p.length, pseudoHeaderSum(src, dst, 6, p.length - t));
}

function mssOf(p: Uint8Array): number {
  const t = p[0] >> 4 === 6 ? 40 : 20;
  for (let i = t + 20; i < t + ((p[t + 12] >> 4) * 4);) {
    if (p[i] === 1) {
      i++;
      continue;
    }
    if (p[i] === 2) return (p[i + 2] << 8) | p[i + 3];
    if (p[i] === 0) break;
    i += p[i + 1];
  }
  return -1;
}

Deno.test("mss clamp: lowered in place with a checksum that still verifies, even and odd offsets", () => {
  for (const version of [4, 6] as const) {
    for (
      const opts of [[2, 4, 0x05, 0xb4], [1, 2, 4, 0x05, 0xb4], [1, 1, 1, 2, 4, 0x23, 0x28, 4, 2]]
    ) {
      const p = syn(version, opts);
      assert(valid(p));
      const max = mssFor(1280, version);
      assertEquals(clampMss(p, max), max);
      assertEquals(mssOf(p), max);
      assert(valid(p), `checksum after clamping (v${version}, ${opts})`);
      // Already small enough: untouched.
      const before = p.slice();
      assertEquals(clampMss(p, 9000), 0);
      assertEquals(p, before);
    }
  }
  // Not a SYN, or no MSS option: untouched.
  const ack = syn(4, [2, 4, 0x05, 0xb4], 0x10);
  assertEquals(clampMss(ack, 1000), 0);
  assertEquals(clampMss(syn(4, [1, 1, 1, 1]), 1000), 0);
});

Deno.test("mss clamp: random and truncated packets are left alone, never thrown on", () => {
  const rand = prng(3);
  const good = syn(4, [2, 4, 0x05, 0xb4]);
  for (let i = 0; i < 20_000; i++) {
    const p = i % 2
      ? good.slice(0, Math.floor(rand() * good.length))
      : new Uint8Array(Math.floor(rand() * 90));
    if (i % 2 === 0) { for (let k = 0; k < p.length; k++) p[k] = (rand() * 256) | 0; }
    const r = clampMss(p, 500);
    assert(r === 0 || r === 500);
  }
});
