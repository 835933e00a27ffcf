import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { prng } from "../support/simnet.ts";
import {
  DecodeError,
  Reader,
  VARINT_MAX,
  varintSize,
  writeVarint,
} from "../../shared/wire/varint.ts";
import {
  datagramFrameSize,
  type FrameSink,
  FrameType,
  MAX_ACK_RANGES,
  MAX_REASON_BYTES,
  parseFrames,
  streamHeaderSize,
  writeAck,
  writeClose,
  writeDatagram,
  writeMaxData,
  writeMaxStreamData,
  writePing,
  writeResetStream,
  writeStreamHeader,
} from "../../shared/wire/frames.ts";

// ------------------------------------------------------------------ helpers

type Frame =
  | { t: "ping" }
  | { t: "ack"; ranges: [number, number][]; delayUs: number }
  | { t: "stream"; id: number; offset: number; data: number[]; fin: boolean }
  | { t: "reset"; id: number; code: number; finalSize: number }
  | { t: "maxData"; max: number }
  | { t: "maxStreamData"; id: number; max: number }
  | { t: "datagram"; data: number[] }
  | { t: "close"; code: number; reason: string };

/** A FrameSink that records every frame as a plain object (copying views). */
class Recorder implements FrameSink {
  frames: Frame[] = [];
  onPing(): void {
    this.frames.push({ t: "ping" });
  }
  onAck(ranges: number[], rangeCount: number, delayUs: number): void {
    const rs: [number, number][] = [];
    for (let i = 0; i < rangeCount; i++) rs.push([ranges[2 * i], ranges[2 * i + 1]]);
    this.frames.push({ t: "ack", ranges: rs, delayUs });
  }
  onStream(id: number, offset: number, data: Uint8Array, fin: boolean): void {
    this.frames.push({ t: "stream", id, offset, data: Array.from(data), fin });
  }
  onResetStream(id: number, code: number, finalSize: number): void {
    this.frames.push({ t: "reset", id, code, finalSize });
  }
  onMaxData(max: number): void {
    this.frames.push({ t: "maxData", max });
  }
  onMaxStreamData(id: number, max: number): void {
    this.frames.push({ t: "maxStreamData", id, max });
  }
  onDatagram(data: Uint8Array): void {
    this.frames.push({ t: "datagram", data: Array.from(data) });
  }
  onClose(code: number, reason: string): void {
    this.frames.push({ t: "close", code, reason });
  }
}

function parse(buf: Uint8Array, end = buf.length): { frames: Frame[]; eliciting: boolean } {
  const r = new Recorder();
  const eliciting = parseFrames(buf, end, r);
  return { frames: r.frames, eliciting };
}

function bytes(...xs: number[]): Uint8Array {
  return Uint8Array.from(xs);
}

/** Encodes a varint into a fresh array of exactly its size. */
function varint(v: number): number[] {
  const b = new Uint8Array(8);
  return Array.from(b.subarray(0, writeVarint(b, 0, v)));
}

const BOUNDARIES: [number, number][] = [
  [0, 1],
  [1, 1],
  [63, 1],
  [64, 2],
  [16383, 2],
  [16384, 4],
  [2 ** 30 - 1, 4],
  [2 ** 30, 8],
  [2 ** 32 - 1, 8],
  [2 ** 32, 8],
  [2 ** 52, 8],
  [2 ** 53 - 1, 8],
];

// ------------------------------------------------------------------ varints

Deno.test("varint: round trip and size at every length boundary", () => {
  assertEquals(VARINT_MAX, 2 ** 53 - 1);
  for (const [v, size] of BOUNDARIES) {
    assertEquals(varintSize(v), size, `size of ${v}`);
    const buf = new Uint8Array(12).fill(0xee);
    const end = writeVarint(buf, 2, v);
    assertEquals(end, 2 + size, `end of ${v}`);
    assertEquals(buf[0], 0xee, "wrote nothing before pos");
    assertEquals(buf[end], 0xee, "wrote nothing past the end");
    assertEquals(buf[2] >>> 6, Math.log2(size), `length prefix of ${v}`);
    const r = new Reader(buf, end);
    r.pos = 2;
    assertEquals(r.varint(), v, `value ${v}`);
    assertEquals(r.remaining, 0);
  }
});

Deno.test("varint: RFC 9000 appendix A.1 sample encodings decode", () => {
  const samples: [string, number | null][] = [
    ["c2197c5eff14e88c", null], // 151288809941952652, above 2^53: must be rejected
    ["9d7f3e7d", 494878333],
    ["7bbd", 15293],
    ["25", 37],
    ["4025", 37], // non-minimal encodings are accepted
  ];
  for (const [hex, v] of samples) {
    const b = Uint8Array.from(hex.match(/../g)!.map((h) => parseInt(h, 16)));
    if (v === null) {
      assertThrows(() => new Reader(b).varint(), DecodeError, "2^53");
    } else {
      assertEquals(new Reader(b).varint(), v, hex);
    }
  }
});

Deno.test("varint: truncated input throws DecodeError and does not move the cursor", () => {
  for (const [v, size] of BOUNDARIES) {
    const enc = Uint8Array.from(varint(v));
    for (let cut = 0; cut < size; cut++) {
      const r = new Reader(enc, cut);
      assertThrows(() => r.varint(), DecodeError, "truncated");
      assertEquals(r.pos, 0, `cursor after truncated ${v}/${cut}`);
    }
    // `end` is honoured even when the underlying buffer holds more bytes.
    const padded = new Uint8Array(16);
    padded.set(enc);
    if (size > 1) assertThrows(() => new Reader(padded, size - 1).varint(), DecodeError);
  }
});

Deno.test("varint: values >= 2^53 are rejected, 2^53-1 is the largest accepted", () => {
  // 2^53 = hi 0x200000, lo 0.
  assertThrows(() => new Reader(bytes(0xc0, 0x20, 0, 0, 0, 0, 0, 0)).varint(), DecodeError);
  // 2^62 - 1 (largest QUIC varint).
  assertThrows(
    () => new Reader(bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)).varint(),
    DecodeError,
  );
  // 2^53 - 1 encodes as c0 1f ff ff ff ff ff ff.
  assertEquals(
    new Reader(bytes(0xc0, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)).varint(),
    2 ** 53 - 1,
  );
});

Deno.test("varint: seeded random values round trip", () => {
  const rand = prng(99);
  const buf = new Uint8Array(8);
  for (let i = 0; i < 5000; i++) {
    // Spread across magnitudes: pick a bit length, then a value below it.
    const bits = Math.floor(rand() * 54);
    const v = Math.min(VARINT_MAX, Math.floor(rand() * 2 ** bits));
    const end = writeVarint(buf, 0, v);
    assertEquals(end, varintSize(v));
    assertEquals(new Reader(buf, end).varint(), v);
  }
});

Deno.test("Reader: u8, u16 and bytes are bounds-checked", () => {
  const r = new Reader(bytes(1, 2, 3, 4, 5), 4);
  assertEquals(r.u8(), 1);
  assertEquals(r.u16(), 0x0203);
  assertThrows(() => r.u16(), DecodeError);
  assertThrows(() => r.bytes(2), DecodeError);
  assertThrows(() => r.bytes(-1), DecodeError);
  assertEquals(Array.from(r.bytes(1)), [4]);
  assertThrows(() => r.u8(), DecodeError);
  assertEquals(r.bytes(0).length, 0);
  // A huge length never allocates: it is checked against what arrived first.
  assertThrows(() => new Reader(new Uint8Array(4)).bytes(2 ** 52), DecodeError);
});

// ------------------------------------------------------------------ frames

Deno.test("frames: every frame type round-trips through its writer and parseFrames", () => {
  const buf = new Uint8Array(4096);
  const payload = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);
  const dgram = Uint8Array.from({ length: 70 }, (_, i) => 255 - i);
  let pos = 0;
  pos = writePing(buf, pos);
  pos = writeAck(buf, pos, 200, [0, 10, 20], [5, 15, 31], 1234);
  pos = writeResetStream(buf, pos, 2 ** 40 + 1, 2, 2 ** 33);
  pos = writeMaxData(buf, pos, 2 ** 53 - 1);
  pos = writeMaxStreamData(buf, pos, 16384, 8 << 20);
  const before = pos;
  pos = writeDatagram(buf, pos, dgram);
  assertEquals(pos - before, datagramFrameSize(dgram.length));
  pos = writeClose(buf, pos, 4, "server stopping — bye");
  // STREAM (no FIN), STREAM+FIN with data, empty STREAM+FIN.
  let h = writeStreamHeader(buf, pos, 5, 1_000_000, payload.length, false);
  assertEquals(h - pos, streamHeaderSize(5, 1_000_000, payload.length));
  buf.set(payload, h);
  pos = h + payload.length;
  h = writeStreamHeader(buf, pos, 0, 0, 3, true);
  buf.set([9, 8, 7], h);
  pos = h + 3;
  pos = writeStreamHeader(buf, pos, 2 ** 30, 2 ** 50, 0, true);
  // An empty datagram is legal too (the client's confirmation packet).
  pos = writeDatagram(buf, pos, new Uint8Array(0));

  const { frames, eliciting } = parse(buf, pos);
  assert(eliciting);
  assertEquals(frames, [
    { t: "ping" },
    { t: "ack", ranges: [[20, 30], [10, 14], [0, 4]], delayUs: 1234 },
    { t: "reset", id: 2 ** 40 + 1, code: 2, finalSize: 2 ** 33 },
    { t: "maxData", max: 2 ** 53 - 1 },
    { t: "maxStreamData", id: 16384, max: 8 << 20 },
    { t: "datagram", data: Array.from(dgram) },
    { t: "close", code: 4, reason: "server stopping — bye" },
    { t: "stream", id: 5, offset: 1_000_000, data: Array.from(payload), fin: false },
    { t: "stream", id: 0, offset: 0, data: [9, 8, 7], fin: true },
    { t: "stream", id: 2 ** 30, offset: 2 ** 50, data: [], fin: true },
    { t: "datagram", data: [] },
  ]);
});

Deno.test("frames: ack-eliciting flag follows the table (ACK, CLOSE and PADDING are not)", () => {
  const buf = new Uint8Array(512);
  type W = (b: Uint8Array) => number;
  const eliciting: W[] = [
    (b) => writePing(b, 0),
    (b) => writeResetStream(b, 0, 1, 0, 0),
    (b) => writeMaxData(b, 0, 1),
    (b) => writeMaxStreamData(b, 0, 1, 1),
    (b) => writeDatagram(b, 0, bytes(1)),
    (b) => writeStreamHeader(b, 0, 0, 0, 0, false),
    (b) => writeStreamHeader(b, 0, 0, 0, 0, true),
  ];
  const cases: [W, boolean][] = eliciting.map((f) => [f, true]);
  cases.push([(b) => writeAck(b, 0, 100, [0], [1], 0), false]);
  cases.push([(b) => writeClose(b, 0, 0, "x"), false]);
  cases.push([(_b) => 0, false]);
  for (const [write, want] of cases) {
    buf.fill(0);
    const end = write(buf);
    assertEquals(parse(buf, end).eliciting, want, `frame ${buf[0]}`);
    // Trailing padding changes nothing.
    assertEquals(parse(buf, end + 40).eliciting, want);
  }
});

Deno.test("frames: CLOSE reason is cut to 255 bytes", () => {
  const buf = new Uint8Array(600);
  const end = writeClose(buf, 0, 7, "r".repeat(400));
  assertEquals(end, 1 + 1 + 1 + MAX_REASON_BYTES);
  assertEquals(parse(buf, end).frames, [{ t: "close", code: 7, reason: "r".repeat(255) }]);
  // The cut never splits a UTF-8 sequence: the reason stays valid UTF-8 and
  // decodes to a prefix of the original (no U+FFFD at the end).
  for (const [reason, keep] of [["é".repeat(200), 127], ["a" + "€".repeat(100), 1 + 84]] as const) {
    const e = writeClose(buf, 0, 1, reason);
    const len = buf[2];
    assert(len <= MAX_REASON_BYTES);
    assertEquals(e, 3 + len);
    const got = (parse(buf, e).frames[0] as Extract<Frame, { t: "close" }>).reason;
    assertEquals(got, [...reason].slice(0, keep).join(""));
    new TextDecoder("utf-8", { fatal: true }).decode(buf.subarray(3, e));
  }
});

Deno.test("frames: PADDING stops parsing — whatever follows a zero byte is ignored", () => {
  const buf = new Uint8Array(64);
  let pos = writePing(buf, 0);
  pos = writeMaxData(buf, pos, 77);
  // pos is now a zero (padding); put garbage that would be malformed after it.
  buf.set([0xff, 0xff, 0x02, 0x07], pos + 1);
  const { frames, eliciting } = parse(buf);
  assertEquals(frames, [{ t: "ping" }, { t: "maxData", max: 77 }]);
  assert(eliciting);
  // A packet that is nothing but padding carries no frames and elicits nothing.
  const only = new Uint8Array(32);
  only[5] = 0xff;
  assertEquals(parse(only), { frames: [], eliciting: false });
  // An empty plaintext parses to nothing.
  assertEquals(parse(new Uint8Array(0)), { frames: [], eliciting: false });
  // `end` bounds parsing: a frame beyond it is not seen.
  const b2 = new Uint8Array(8);
  writePing(b2, 0);
  writePing(b2, 1);
  assertEquals(parse(b2, 1).frames, [{ t: "ping" }]);
});

// --------------------------------------------------------------------- ACK

/** Half-open ascending ranges → the inclusive descending ranges parseFrames reports. */
function expectedAckRanges(starts: number[], ends: number[], n: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = starts.length - 1; i >= 0 && out.length < n; i--) out.push([starts[i], ends[i] - 1]);
  return out;
}

function randomRanges(rand: () => number, count: number): { starts: number[]; ends: number[] } {
  const starts: number[] = [];
  const ends: number[] = [];
  let at = Math.floor(rand() * 3); // may start at 0
  for (let i = 0; i < count; i++) {
    // Gaps and lengths cross varint size boundaries sometimes.
    const big = rand() < 0.1;
    const len = 1 + Math.floor(rand() * (big ? 20000 : 5));
    starts.push(at);
    ends.push(at + len);
    at += len + 1 + Math.floor(rand() * (big ? 100000 : 4));
  }
  return { starts, ends };
}

Deno.test("ACK: writeAck output parses back to the same ranges, capped at 32", () => {
  const rand = prng(5);
  const buf = new Uint8Array(2048);
  for (let iter = 0; iter < 400; iter++) {
    const n = 1 + Math.floor(rand() * 60);
    const { starts, ends } = randomRanges(rand, n);
    const delay = Math.floor(rand() * 2 ** (rand() * 40));
    const end = writeAck(buf, 0, 2048, starts, ends, delay);
    assert(end > 0);
    const { frames, eliciting } = parse(buf, end);
    assert(!eliciting);
    assertEquals(frames.length, 1);
    const f = frames[0] as Extract<Frame, { t: "ack" }>;
    assertEquals(f.delayUs, delay);
    assertEquals(f.ranges.length, Math.min(n, MAX_ACK_RANGES));
    assertEquals(f.ranges, expectedAckRanges(starts, ends, MAX_ACK_RANGES), `iter ${iter}`);
  }
});

Deno.test("ACK: writeAck respects `room`, dropping the oldest ranges first", () => {
  const rand = prng(17);
  for (let iter = 0; iter < 300; iter++) {
    const n = 1 + Math.floor(rand() * 40);
    const { starts, ends } = randomRanges(rand, n);
    const room = Math.floor(rand() * 120);
    const buf = new Uint8Array(300).fill(0xaa);
    const end = writeAck(buf, 10, room, starts, ends, 77);
    for (let i = 0; i < 10; i++) assertEquals(buf[i], 0xaa, "nothing before pos");
    for (let i = end; i < buf.length; i++) assertEquals(buf[i], 0xaa, "nothing past the end");
    assert(end - 10 <= room, `used ${end - 10} > room ${room}`);
    if (end === 10) {
      // Nothing fit: the minimal one-range frame must indeed be larger than room.
      const largest = ends[n - 1] - 1;
      const min = 1 + varintSize(largest) + varintSize(77) + 1 +
        varintSize(largest - starts[n - 1]);
      assert(min > room, `a one-range ack (${min} bytes) fit in ${room}`);
      continue;
    }
    const f = parse(buf.subarray(10, end)).frames[0] as Extract<Frame, { t: "ack" }>;
    // Whatever was kept is the newest ranges, exactly.
    assertEquals(f.ranges, expectedAckRanges(starts, ends, f.ranges.length));
    // And it is maximal: one more range would not have fit (or the cap/total was hit).
    if (f.ranges.length < Math.min(n, MAX_ACK_RANGES)) {
      const big = new Uint8Array(300);
      const full = writeAck(big, 0, 300, starts, ends, 77);
      const more = parse(big.subarray(0, full)).frames[0] as Extract<Frame, { t: "ack" }>;
      assert(more.ranges.length > f.ranges.length);
    }
  }
});

Deno.test("ACK: nothing to acknowledge writes nothing", () => {
  const buf = new Uint8Array(16);
  assertEquals(writeAck(buf, 3, 100, [], [], 0), 3);
});

Deno.test("ACK: a single packet 0 and a range reaching 0 are legal", () => {
  const buf = new Uint8Array(64);
  let end = writeAck(buf, 0, 64, [0], [1], 0);
  assertEquals(parse(buf, end).frames, [{ t: "ack", ranges: [[0, 0]], delayUs: 0 }]);
  // first range [2,2], gap 0 → next range hi = 2-0-2 = 0, len 0 → [0,0].
  end = writeAck(buf, 0, 64, [0, 2], [1, 3], 0);
  assertEquals(parse(buf, end).frames, [{ t: "ack", ranges: [[2, 2], [0, 0]], delayUs: 0 }]);
});

// --------------------------------------------------------------- malformed

function throwsDecode(b: Uint8Array | number[], msg?: string): void {
  const buf = b instanceof Uint8Array ? b : Uint8Array.from(b);
  assertThrows(() => parseFrames(buf, buf.length, new Recorder()), DecodeError, msg);
}

Deno.test("malformed: unknown frame types throw DecodeError", () => {
  for (let t = 0x0a; t < 0x100; t++) throwsDecode([t], "unknown frame type");
  // Also after a valid frame.
  throwsDecode([FrameType.PING, 0x40], "unknown frame type");
});

Deno.test("malformed: every truncation of every frame throws DecodeError", () => {
  const buf = new Uint8Array(1024);
  const writers: ((b: Uint8Array) => number)[] = [
    (b) => writeAck(b, 0, 500, [0, 100, 20000], [50, 16000, 20001], 100000),
    (b) => writeResetStream(b, 0, 70000, 2, 2 ** 31),
    (b) => writeMaxData(b, 0, 2 ** 40),
    (b) => writeMaxStreamData(b, 0, 300, 2 ** 20),
    (b) => writeDatagram(b, 0, new Uint8Array(100).fill(1)),
    (b) => writeClose(b, 0, 1000, "a reason"),
    (b) => {
      const h = writeStreamHeader(b, 0, 4, 2 ** 35, 200, true);
      b.fill(3, h, h + 200);
      return h + 200;
    },
  ];
  for (const w of writers) {
    buf.fill(0);
    const end = w(buf);
    parse(buf, end); // whole frame is fine
    // Cut it anywhere after the type byte; bytes beyond the cut are non-zero
    // garbage so that nothing is mistaken for padding.
    for (let cut = 1; cut < end; cut++) {
      const copy = buf.slice(0, cut);
      assertThrows(
        () => parseFrames(copy, cut, new Recorder()),
        DecodeError,
        undefined,
      );
      // Same cut expressed with `end` inside a larger buffer.
      assertThrows(() => parseFrames(buf, cut, new Recorder()), DecodeError);
    }
  }
});

Deno.test("malformed: ACK ranges below zero throw DecodeError", () => {
  // largest 5, first_range 6 → lo = -1.
  throwsDecode([FrameType.ACK, 5, 0, 1, 6], "below zero");
  // largest 10, first 0 → [10,10]; gap 8 → hi = 10-8-2 = 0, len 1 → lo = -1.
  throwsDecode([FrameType.ACK, 10, 0, 2, 0, 8, 1], "below zero");
  // gap reaching below zero on its own: hi = 10 - 9 - 2 = -1.
  throwsDecode([FrameType.ACK, 10, 0, 2, 0, 9, 0], "below zero");
  // Edge that is still legal: hi = 0, len 0.
  assertEquals(
    parse(Uint8Array.from([FrameType.ACK, 10, 0, 2, 0, 8, 0])).frames,
    [{ t: "ack", ranges: [[10, 10], [0, 0]], delayUs: 0 }],
  );
  // Huge values near 2^53 do not wrap.
  throwsDecode([FrameType.ACK, 1, 0, 1, ...varint(2 ** 53 - 1)], "below zero");
});

Deno.test("malformed: ACK range count 0 or above 32 throws DecodeError", () => {
  throwsDecode([FrameType.ACK, 5, 0, 0, 0], "range count");
  throwsDecode([FrameType.ACK, 5, 0, 33, 0], "range count");
  throwsDecode([FrameType.ACK, 5, 0, ...varint(2 ** 40), 0], "range count");
  // 32 ranges is accepted.
  const frame = [FrameType.ACK, ...varint(1000), 0, 32, 0];
  for (let i = 1; i < 32; i++) frame.push(0, 0);
  const f = parse(Uint8Array.from(frame)).frames[0] as Extract<Frame, { t: "ack" }>;
  assertEquals(f.ranges.length, 32);
  assertEquals(f.ranges[31], [1000 - 2 * 31, 1000 - 2 * 31]);
});

Deno.test("malformed: DATAGRAM and STREAM lengths beyond the buffer throw DecodeError", () => {
  throwsDecode([FrameType.DATAGRAM, 5, 1, 2, 3, 4], "truncated");
  throwsDecode([FrameType.DATAGRAM, ...varint(2 ** 52), 1, 2], "truncated");
  throwsDecode([FrameType.STREAM, 0, 0, 3, 1, 2], "truncated");
  throwsDecode([FrameType.STREAM_FIN, 0, 0, ...varint(2 ** 50)], "truncated");
  throwsDecode([FrameType.CLOSE, 0, 10, 0x41], "truncated");
  // A length that fits the buffer but not `end`.
  const b = Uint8Array.from([FrameType.DATAGRAM, 3, 1, 2, 3]);
  assertThrows(() => parseFrames(b, 4, new Recorder()), DecodeError);
  // STREAM whose offset + length passes 2^53.
  throwsDecode([FrameType.STREAM, 0, ...varint(2 ** 53 - 1), 1, 0x55], "stream offset");
});

Deno.test("malformed: varints >= 2^53 inside frames throw DecodeError", () => {
  const huge = [0xc0, 0x20, 0, 0, 0, 0, 0, 0];
  throwsDecode([FrameType.MAX_DATA, ...huge], "2^53");
  throwsDecode([FrameType.STREAM, ...huge, 0, 0], "2^53");
  throwsDecode([FrameType.ACK, ...huge, 0, 1, 0], "2^53");
});

Deno.test("fuzz: 20,000 random inputs only return or throw DecodeError", () => {
  const rand = prng(2024);
  const sink = new Recorder();
  const buf = new Uint8Array(256);
  let threw = 0;
  let returned = 0;
  for (let iter = 0; iter < 20_000; iter++) {
    const len = Math.floor(rand() * buf.length);
    // Bias toward plausible frames: first byte mostly a known type, few zero bytes.
    for (let i = 0; i < len; i++) {
      const x = rand();
      buf[i] = x < 0.3 ? 1 + Math.floor(rand() * 9) : x < 0.35 ? 0 : Math.floor(rand() * 256);
    }
    sink.frames.length = 0;
    try {
      parseFrames(buf, len, sink);
      returned++;
    } catch (e) {
      if (!(e instanceof DecodeError)) {
        throw new Error(`iteration ${iter}: non-DecodeError ${e}`);
      }
      threw++;
    }
    // Every reported frame respects the buffer.
    for (const f of sink.frames) {
      if (f.t === "stream") assert(f.data.length <= len);
      if (f.t === "datagram") assert(f.data.length <= len);
      if (f.t === "ack") {
        assert(f.ranges.length >= 1 && f.ranges.length <= MAX_ACK_RANGES);
        for (const [lo, hi] of f.ranges) assert(lo >= 0 && lo <= hi);
      }
    }
  }
  assert(threw > 1000 && returned > 1000, `threw ${threw}, returned ${returned}`);
});

Deno.test("fuzz: mutated valid packets only return or throw DecodeError", () => {
  const rand = prng(77);
  const base = new Uint8Array(400);
  let pos = writePing(base, 0);
  pos = writeAck(base, pos, 200, [0, 10, 300], [5, 200, 20000], 500);
  const h = writeStreamHeader(base, pos, 8, 1000, 40, true);
  pos = h + 40;
  pos = writeDatagram(base, pos, new Uint8Array(30).fill(9));
  pos = writeClose(base, pos, 3, "idle");
  pos = writeMaxStreamData(base, pos, 9, 70000);
  const buf = new Uint8Array(pos);
  for (let iter = 0; iter < 20_000; iter++) {
    buf.set(base.subarray(0, pos));
    const flips = 1 + Math.floor(rand() * 4);
    for (let k = 0; k < flips; k++) buf[Math.floor(rand() * pos)] = Math.floor(rand() * 256);
    const end = rand() < 0.3 ? Math.floor(rand() * pos) : pos;
    try {
      parseFrames(buf, end, new Recorder());
    } catch (e) {
      if (!(e instanceof DecodeError)) throw new Error(`iteration ${iter}: ${e}`);
    }
  }
});
