import { assert, assertEquals } from "../support/assert.ts";
import { FrameReader, FrameWriter } from "../../shared/carrier/stream_framing.ts";

function frames(sizes: number[]): { wire: Uint8Array; payloads: Uint8Array[] } {
  const w = new FrameWriter(16);
  const payloads = sizes.map((n, i) =>
    Uint8Array.from({ length: n }, (_, j) => (i * 31 + j) & 0xff)
  );
  for (const p of payloads) w.add(p);
  return { wire: w.take(), payloads };
}

Deno.test("stream framing: every split of a stream of frames gives the same frames", () => {
  const { wire, payloads } = frames([1, 2, 300, 7, 1, 1500]);
  for (let a = 0; a <= wire.length; a += 3) {
    for (const b of [a, a + 1, a + 2, a + 17, wire.length]) {
      if (b < a || b > wire.length) continue;
      const r = new FrameReader(2000);
      const got: Uint8Array[] = [];
      for (const part of [wire.subarray(0, a), wire.subarray(a, b), wire.subarray(b)]) {
        assert(r.push(part, (f) => got.push(f.slice())), "valid stream");
      }
      assertEquals(got, payloads);
      assertEquals(r.pending, 0);
    }
  }
  // Byte by byte too.
  const r = new FrameReader(2000);
  const got: Uint8Array[] = [];
  for (const byte of wire) r.push(Uint8Array.of(byte), (f) => got.push(f.slice()));
  assertEquals(got, payloads);
  assertEquals(r.frames, payloads.length);
});

Deno.test("stream framing: a zero length or one above the limit breaks the stream", () => {
  const r = new FrameReader(100);
  assertEquals(r.push(Uint8Array.of(0, 0, 1), () => {}), false);
  const r2 = new FrameReader(100);
  assertEquals(r2.push(Uint8Array.of(0, 101), () => {}), false);
  const r3 = new FrameReader(100);
  assert(r3.push(Uint8Array.of(0), () => {}), "half a length is fine");
  assertEquals(r3.push(Uint8Array.of(200), () => {}), false, "…until it says 200");
  // "GET /" is a length of 18245: no frame.
  const r4 = new FrameReader(16384);
  assertEquals(r4.push(new TextEncoder().encode("GET / HTTP/1.1\r\n"), () => {}), false);
  // held() keeps an incomplete frame's bytes.
  const r5 = new FrameReader(100);
  r5.push(Uint8Array.of(0, 5, 1, 2), () => {});
  assertEquals(r5.held(), Uint8Array.of(0, 5, 1, 2));
});

Deno.test("stream framing: the writer grows and starts empty after take", () => {
  const w = new FrameWriter(4);
  w.add(new Uint8Array(1000));
  w.add(Uint8Array.of(9));
  assertEquals(w.size, 1005);
  const out = w.take();
  assertEquals(out.length, 1005);
  assertEquals([out[0], out[1], out[1002], out[1003], out[1004]], [0x03, 0xe8, 0, 1, 9]);
  assertEquals(w.size, 0);
});
