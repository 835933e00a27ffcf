/**
 * Behaviour of two sans-I/O sessions joined by the deterministic SimNet:
 * flow control, reset, half-close, datagrams, close, idle/keepalive, stream
 * limits, packet-number uniqueness and the absence of cross-stream
 * head-of-line blocking. Everything runs in virtual time.
 */

import { assert, assertEquals } from "../support/assert.ts";
import {
  CloseCode,
  ReadResult,
  Session,
  type SessionConfig,
  type SessionEvent,
} from "../../shared/session/session.ts";
import { type FrameSink, parseFrames } from "../../shared/wire/frames.ts";
import { ClearProtector, type LinkProfile, prng, SimNet } from "../support/simnet.ts";

// ------------------------------------------------------------------ harness

interface StreamFrameRec {
  pn: number;
  id: number;
  offset: number;
  len: number;
  fin: boolean;
}

/**
 * A ClearProtector that also records what the session sealed: every packet
 * number and every frame (parsed back from the plaintext).
 */
class TapProtector extends ClearProtector {
  pns: number[] = [];
  streamFrames: StreamFrameRec[] = [];
  datagramFrames: Uint8Array[] = [];
  pings = 0;
  resets: { id: number; code: number; finalSize: number }[] = [];
  maxData: number[] = [];
  closes: { code: number; reason: string }[] = [];

  override seal(pn: number, plaintext: Uint8Array, out: Uint8Array): number {
    const sink: FrameSink = {
      onPing: () => {
        this.pings++;
      },
      onAck: () => {},
      onStream: (id, offset, data, fin) => {
        this.streamFrames.push({ pn, id, offset, len: data.length, fin });
      },
      onResetStream: (id, code, finalSize) => {
        this.resets.push({ id, code, finalSize });
      },
      onMaxData: (max) => {
        this.maxData.push(max);
      },
      onMaxStreamData: () => {},
      onDatagram: (data) => {
        this.datagramFrames.push(data.slice());
      },
      onClose: (code, reason) => {
        this.closes.push({ code, reason });
      },
    };
    parseFrames(plaintext, plaintext.length, sink);
    this.pns.push(pn);
    return super.seal(pn, plaintext, out);
  }

  /** Highest stream offset (offset + len) ever sent on `id`. */
  sentHighest(id: number): number {
    let m = 0;
    for (const f of this.streamFrames) if (f.id === id) m = Math.max(m, f.offset + f.len);
    return m;
  }
}

type Cfg = Partial<SessionConfig>;

const base: Cfg = { idleTimeout: 30_000, keepalive: 10_000 };

function makeSession(isClient: boolean, local: Cfg, remote: Cfg, tap: TapProtector): Session {
  const r = { ...defaults(), ...remote };
  const s = new Session({
    protector: tap,
    isClient,
    peer: { maxData: r.maxData, maxStreamData: r.maxStreamData, maxStreams: r.maxStreams },
    now: 0,
    config: local,
  });
  // Padding lengths come from crypto randomness; pin them so runs repeat exactly.
  (s as unknown as { rand: number }).rand = isClient ? 0x1234567 : 0x7654321;
  return s;
}

function defaults(): SessionConfig {
  return new Session({
    protector: new ClearProtector(),
    isClient: true,
    peer: { maxData: 1 << 20, maxStreamData: 1 << 20, maxStreams: 1 },
    now: 0,
  }).config;
}

interface TimedEvent {
  at: number;
  ev: SessionEvent;
}

/** Two sessions (0 = client, 1 = server) on a SimNet, with event logs. */
class Harness {
  readonly net: SimNet;
  readonly s: [Session, Session];
  readonly tap: [TapProtector, TapProtector] = [new TapProtector(), new TapProtector()];
  readonly events: [TimedEvent[], TimedEvent[]] = [[], []];
  /** Called before every step: the application. */
  app: () => void = () => {};

  constructor(opts: {
    client?: Cfg;
    server?: Cfg;
    link?: LinkProfile;
    links?: [LinkProfile, LinkProfile];
    seed?: number;
  } = {}) {
    const c = { ...base, ...opts.client };
    const sv = { ...base, ...opts.server };
    const client = makeSession(true, c, sv, this.tap[0]);
    const server = makeSession(false, sv, c, this.tap[1]);
    this.s = [client, server];
    const link = opts.link ?? clean;
    const links = opts.links ?? [{ ...link }, { ...link }];
    this.net = new SimNet(client, server, links, opts.seed ?? 1);
  }

  get now(): number {
    return this.net.now;
  }

  get client(): Session {
    return this.s[0];
  }

  get server(): Session {
    return this.s[1];
  }

  private pump(): void {
    for (const i of [0, 1] as const) {
      let ev;
      while ((ev = this.s[i].pollEvent())) this.events[i].push({ at: this.net.now, ev });
    }
  }

  /** Steps until `cond` holds or `withinMs` of virtual time passed; returns `cond()`. */
  run(cond: () => boolean, withinMs: number): boolean {
    const untilMs = this.net.now + withinMs;
    for (let guard = 0; guard < 5_000_000; guard++) {
      this.app();
      this.pump();
      if (cond()) return true;
      if (this.net.now >= untilMs) return false;
      this.net.step();
    }
    throw new Error("harness guard tripped");
  }

  /** Runs for `ms` of virtual time. */
  runFor(ms: number): void {
    const until = this.net.now + ms;
    this.run(() => this.net.now >= until, ms);
  }

  /** Events of one side of a given type. */
  eventsOf<T extends SessionEvent["type"]>(
    side: 0 | 1,
    type: T,
  ): (Extract<SessionEvent, { type: T }> & { at: number })[] {
    return this.events[side].filter((e) => e.ev.type === type).map((e) => ({
      ...(e.ev as Extract<SessionEvent, { type: T }>),
      at: e.at,
    }));
  }

  /** Peer-opened stream ids seen on `side`. */
  newStreams(side: 0 | 1): number[] {
    return this.eventsOf(side, "stream").map((e) => e.id);
  }
}

const clean: LinkProfile = { delayMs: 20, jitterMs: 0, loss: 0, duplicate: 0 };
const lossy: LinkProfile = { delayMs: 20, jitterMs: 5, loss: 0.1, duplicate: 0 };

function payload(seed: number, len: number): Uint8Array {
  const r = prng(seed);
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (r() * 256) | 0;
  return out;
}

/** Writes `data` to a stream as room allows, then FIN (unless `fin` is false). */
class Writer {
  off = 0;
  finished = false;
  result = 0;
  constructor(
    readonly s: Session,
    readonly id: number,
    readonly data: Uint8Array,
    readonly fin = true,
  ) {}
  tick(): void {
    if (this.finished || this.result < 0) return;
    if (this.off < this.data.length) {
      const n = this.s.streamWrite(this.id, this.data.subarray(this.off));
      if (n < 0) {
        this.result = n;
        return;
      }
      this.off += n;
    }
    if (this.off === this.data.length && this.fin) {
      this.s.streamFinish(this.id);
      this.finished = true;
    }
  }
}

const scratch = new Uint8Array(65536);

/** Reads a stream to its end; `status` ends as "end" or "reset". */
class Drain {
  chunks: Uint8Array[] = [];
  bytes = 0;
  status: "open" | "end" | "reset" = "open";
  doneAt = -1;
  constructor(readonly s: Session, readonly id: number, readonly limit = Infinity) {}
  tick(now: number): void {
    while (this.status === "open" && this.bytes < this.limit) {
      const n = this.s.streamRead(
        this.id,
        scratch.subarray(0, Math.min(scratch.length, this.limit - this.bytes)),
      );
      if (n > 0) {
        this.chunks.push(scratch.slice(0, n));
        this.bytes += n;
        continue;
      }
      if (n === ReadResult.END) this.status = "end";
      if (n === ReadResult.RESET) this.status = "reset";
      if (this.status !== "open") this.doneAt = now;
      break;
    }
  }
  get data(): Uint8Array {
    const out = new Uint8Array(this.bytes);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

function closedEvent(h: Harness, side: 0 | 1) {
  return h.eventsOf(side, "closed")[0];
}

// -------------------------------------------------------- flow control

Deno.test("flow control: an unread stream never stalls another; its data stays within the stream window", () => {
  const win = 64 * 1024;
  const h = new Harness({
    client: { maxStreamData: win, sendBuffer: 1 << 20 },
    server: { maxStreamData: win, maxData: 16 << 20 },
  });
  const { client, server } = h;
  const a = client.openStream();
  const b = client.openStream();
  const dataA = payload(1, 3 << 20);
  const dataB = payload(2, 2 << 20);
  const wa = new Writer(client, a, dataA);
  const wb = new Writer(client, b, dataB);
  const readB = new Drain(server, b);
  let readA: Drain | null = null;
  let readingA = false;
  h.app = () => {
    wa.tick();
    wb.tick();
    if (h.newStreams(1).includes(b)) readB.tick(h.now);
    if (readingA) {
      readA ??= new Drain(server, a);
      readA.tick(h.now);
    }
  };
  assert(h.run(() => readB.status === "end", 20_000), "stream B completed");
  assertEquals(readB.data, dataB);
  assert(h.newStreams(1).includes(a), "the server knows stream A");
  const highAtB = h.tap[0].sentHighest(a);
  assert(highAtB > 0, "some of A was sent");
  assert(highAtB <= win, `A sent ${highAtB} > stream window ${win}`);
  // Keep going: A's sent bytes stop growing at the window and nothing stays in flight.
  h.runFor(3000);
  assertEquals(h.tap[0].sentHighest(a), win, "A filled exactly its window, no more");
  assertEquals(client.inFlight, 0, "no data stuck in flight while A is blocked");
  assert(wa.off < dataA.length, "the writer of A is held back by its send buffer");
  assertEquals(client.streamWritable(a), 0, "A's send buffer is full");
  const writableBefore = h.eventsOf(0, "writable").filter((e) => e.id === a).length;
  // Now the server reads A: credit flows and A completes too.
  readingA = true;
  assert(h.run(() => readA?.status === "end", 30_000), "stream A completed");
  assertEquals(readA!.data, dataA);
  assert(
    h.eventsOf(0, "writable").filter((e) => e.id === a).length > writableBefore,
    "the writer got `writable` once credit returned",
  );
  assert(client.isOpen && server.isOpen);
});

Deno.test("flow control: session credit is replenished as the application reads", () => {
  const maxData = 64 * 1024;
  const h = new Harness({
    client: { maxData, maxStreamData: 32 * 1024 },
    server: { maxData, maxStreamData: 32 * 1024 },
  });
  const { client, server } = h;
  const ids = [0, 1, 2, 3].map(() => client.openStream());
  const data = ids.map((_, i) => payload(10 + i, 700_000));
  const writers = ids.map((id, i) => new Writer(client, id, data[i]));
  const drains = new Map<number, Drain>();
  let reading = false;
  h.app = () => {
    writers.forEach((w) => w.tick());
    if (!reading) return;
    for (const id of h.newStreams(1)) {
      if (!drains.has(id)) drains.set(id, new Drain(server, id));
      drains.get(id)!.tick(h.now);
    }
  };
  // While nobody reads, the total sent across all streams stays within maxData.
  h.runFor(2000);
  const total = () => ids.reduce((s, id) => s + h.tap[0].sentHighest(id), 0);
  assert(total() > 0);
  assert(total() <= maxData, `sent ${total()} new bytes with ${maxData} of session credit`);
  assertEquals(total(), maxData, "the whole session window was used");
  // Reading replenishes credit: 2.8 MB (43x the window) go through.
  reading = true;
  assert(
    h.run(() => ids.every((id) => drains.get(id)?.status === "end"), 60_000),
    "all streams completed",
  );
  ids.forEach((id, i) => assertEquals(drains.get(id)!.data, data[i], `stream ${id}`));
  assert(h.tap[1].maxData.length > 10, "the receiver re-announced MAX_DATA repeatedly");
  assert(client.isOpen && server.isOpen, "no FLOW_CONTROL close");
});

// ---------------------------------------------------------------- reset

Deno.test("reset: the peer reads RESET, both sides drop the stream", () => {
  const h = new Harness();
  const { client, server } = h;
  const id = client.openStream();
  const w = new Writer(client, id, payload(3, 500_000), false);
  let got = 0;
  let serverStatus = 0;
  h.app = () => {
    w.tick();
    if (h.newStreams(1).includes(id) && serverStatus === 0) {
      const n = server.streamRead(id, scratch);
      if (n > 0) got += n;
      else if (n < 0) serverStatus = n;
    }
  };
  assert(h.run(() => got > 10_000, 5000));
  client.streamReset(id, 0);
  assertEquals(client.streamRead(id, scratch), ReadResult.RESET, "local read after reset");
  assertEquals(client.streamWrite(id, new Uint8Array(1)), -1, "write after reset");
  assert(h.run(() => serverStatus !== 0, 5000));
  assertEquals(serverStatus, ReadResult.RESET);
  assertEquals(server.streamWrite(id, new Uint8Array(1)), -1);
  assert(h.run(() => client.streamCount === 0 && server.streamCount === 0, 5000));
  const sent = h.tap[0].resets.find((r) => r.id === id)!;
  assertEquals(sent.finalSize, h.tap[0].sentHighest(id), "final size = bytes sent");
  const answer = h.tap[1].resets.find((r) => r.id === id);
  assert(answer, "server answered with its RESET_STREAM");
  assertEquals(answer.finalSize, 0, "the server had sent nothing");
  assert(client.isOpen && server.isOpen);
});

Deno.test("reset: the receiving side resets a stream it is being sent", () => {
  // A send buffer smaller than the payload keeps the writer writing.
  const h = new Harness({ client: { sendBuffer: 1 << 20 } });
  const { client, server } = h;
  const id = client.openStream();
  const w = new Writer(client, id, payload(4, 2 << 20));
  h.app = () => w.tick();
  assert(h.run(() => h.newStreams(1).includes(id), 2000));
  h.runFor(50);
  server.streamReset(id, 2);
  assert(h.run(() => w.result < 0, 5000), "the writer sees the reset");
  assertEquals(client.streamRead(id, scratch), ReadResult.RESET);
  assert(h.run(() => client.streamCount === 0 && server.streamCount === 0, 5000));
  const r = h.tap[1].resets.find((x) => x.id === id)!;
  assertEquals(r.code, 2);
  assertEquals(r.finalSize, 0, "the server sent nothing on the stream");
  // The client answered with its final size: exactly what it had sent.
  const answer = h.tap[0].resets.find((x) => x.id === id)!;
  assert(answer.finalSize > 0);
  assertEquals(answer.finalSize, h.tap[0].sentHighest(id));
  assert(w.off < 2 << 20, "the writer was stopped before it finished");
});

Deno.test("reset: many resets in a row leak no session credit (also under loss)", () => {
  for (const link of [clean, lossy]) {
    const maxData = 256 * 1024;
    const h = new Harness({
      client: { maxData, maxStreamData: 128 * 1024 },
      server: { maxData, maxStreamData: 128 * 1024 },
      link,
      seed: 9,
    });
    const { client, server } = h;
    const rand = prng(5);
    for (let i = 0; i < 40; i++) {
      const id = client.openStream();
      assert(id >= 0);
      const w = new Writer(client, id, payload(100 + i, 150_000), false);
      const partial = new Drain(server, id, Math.floor(rand() * 40_000));
      const readSome = rand() < 0.5;
      h.app = () => {
        w.tick();
        if (readSome && h.newStreams(1).includes(id)) partial.tick(h.now);
      };
      h.runFor(20 + rand() * 200);
      // Alternate who resets.
      if (i % 3 === 2 && h.newStreams(1).includes(id)) server.streamReset(id, 0);
      else client.streamReset(id, 0);
      h.app = () => {};
    }
    assert(
      h.run(() => client.streamCount === 0 && server.streamCount === 0, 20_000),
      `streams dropped (client ${client.streamCount}, server ${server.streamCount})`,
    );
    assert(client.isOpen && server.isOpen, "no flow-control violation");
    // ~40 × up to 128 KiB were sent and abandoned; a leak of even one window
    // would now block this transfer.
    const id = client.openStream();
    const big = payload(77, 1_500_000);
    const w = new Writer(client, id, big);
    const d = new Drain(server, id);
    h.app = () => {
      w.tick();
      if (h.newStreams(1).includes(id)) d.tick(h.now);
    };
    assert(h.run(() => d.status === "end", 60_000), "large transfer after resets");
    assertEquals(d.data, big);
  }
});

Deno.test("reset after our own FIN still stops the peer's sending direction", () => {
  // A request/response stream: the client sends its request and FIN, then
  // abandons the (long) response part-way. The server must learn of it and
  // stop sending instead of streaming the whole response into the void.
  const h = new Harness();
  const { client, server } = h;
  const id = client.openStream();
  client.streamWrite(id, new Uint8Array([1, 2, 3]));
  client.streamFinish(id);
  const response = payload(12, 20 << 20);
  let ws: Writer | null = null;
  const rc = new Drain(client, id, 100_000);
  h.app = () => {
    if (h.newStreams(1).includes(id)) {
      ws ??= new Writer(server, id, response);
      ws.tick();
    }
    rc.tick(h.now);
  };
  assert(h.run(() => rc.bytes >= 100_000, 5000), "response started");
  // The request's FIN has been acknowledged by now.
  client.streamReset(id, 0);
  assertEquals(client.streamRead(id, scratch), ReadResult.RESET);
  assert(h.run(() => ws!.result < 0, 5000), "the server's writer saw the reset");
  assert(h.run(() => client.streamCount === 0 && server.streamCount === 0, 5000));
  const sent = h.tap[1].sentHighest(id);
  assert(sent < 8 << 20, `the server sent ${sent} bytes of an abandoned response`);
  assert(h.tap[0].resets.some((r) => r.id === id && r.finalSize === 3), "RESET_STREAM sent");
});

// ------------------------------------------------------- FIN / half-close

Deno.test("FIN in both directions and half-close", () => {
  const h = new Harness({ link: lossy, seed: 4 });
  const { client, server } = h;
  const id = client.openStream();
  const up = payload(5, 200_000);
  const down = payload(6, 400_000);
  const wc = new Writer(client, id, up);
  const rs = new Drain(server, id);
  const rc = new Drain(client, id);
  let ws: Writer | null = null;
  let serverFinishedAt = -1;
  h.app = () => {
    wc.tick();
    rc.tick(h.now);
    if (!h.newStreams(1).includes(id)) return;
    rs.tick(h.now);
    // The server answers slowly: 4 KB per step, and FINs only after its peer's END.
    ws ??= new Writer(server, id, down, false);
    if (ws.off < down.length) {
      const n = server.streamWrite(id, down.subarray(ws.off, Math.min(down.length, ws.off + 4096)));
      assert(n >= 0);
      ws.off += n;
    } else if (rs.status === "end" && serverFinishedAt < 0) {
      server.streamFinish(id);
      serverFinishedAt = h.now;
    }
  };
  assert(h.run(() => rs.status === "end", 30_000), "client→server direction ended");
  assertEquals(rs.data, up);
  // Half-closed: the client finished sending but keeps receiving.
  assertEquals(client.streamWrite(id, new Uint8Array(1)), -1, "no writes after FIN");
  assertEquals(rc.status, "open", "the server's direction is still open");
  assert(serverFinishedAt < 0 || rc.bytes < down.length);
  assert(h.run(() => rc.status === "end", 30_000), "server→client direction ended");
  assertEquals(rc.data, down);
  assert(rc.doneAt >= serverFinishedAt);
  assert(h.run(() => client.streamCount === 0 && server.streamCount === 0, 10_000));
  assert(client.isOpen && server.isOpen);
});

Deno.test("FIN: empty streams and zero-byte FIN open and close cleanly", () => {
  const h = new Harness();
  const { client, server } = h;
  const id = client.openStream();
  client.streamFinish(id);
  const d = new Drain(server, id);
  const d2 = new Drain(client, id);
  h.app = () => {
    if (h.newStreams(1).includes(id)) {
      d.tick(h.now);
      if (d.status === "end") server.streamFinish(id);
    }
    d2.tick(h.now);
  };
  assert(h.run(() => d.status === "end" && d2.status === "end", 2000));
  assertEquals(d.bytes, 0);
  assert(h.run(() => client.streamCount === 0 && server.streamCount === 0, 2000));
});

// ------------------------------------------------------------ datagrams

function datagram(i: number, rand: () => number): Uint8Array {
  const d = new Uint8Array(4 + Math.floor(rand() * 600));
  new DataView(d.buffer).setUint32(0, i);
  for (let k = 4; k < d.length; k++) d[k] = (i + k) & 0xff;
  return d;
}

function datagramRun(link: LinkProfile, seed: number) {
  const h = new Harness({ link, seed });
  const { client } = h;
  const rand = prng(seed);
  const total = 400;
  let sent = 0;
  h.app = () => {
    for (let k = 0; k < 8 && sent < total; k++) assert(client.sendDatagram(datagram(sent++, rand)));
  };
  h.run(() => sent === total, 10_000);
  h.app = () => {};
  h.runFor(2000);
  const got = h.eventsOf(1, "datagram").map((e) => e.data);
  const ids = got.map((d) => new DataView(d.buffer, d.byteOffset).getUint32(0));
  for (const d of got) {
    // Intact content.
    const i = new DataView(d.buffer, d.byteOffset).getUint32(0);
    for (let k = 4; k < d.length; k++) assertEquals(d[k], (i + k) & 0xff);
  }
  return { h, sent, ids };
}

Deno.test("datagrams: all arrive once on a clean link", () => {
  const { h, sent, ids } = datagramRun(clean, 1);
  assertEquals(ids.length, sent);
  assertEquals(ids, Array.from({ length: sent }, (_, i) => i), "in order, each once");
  assertEquals(h.tap[0].datagramFrames.length, sent, "each sent exactly once");
});

Deno.test("datagrams: maximum-size datagrams get through beside stream traffic and acks", () => {
  const h = new Harness();
  const { client, server } = h;
  const id = server.openStream();
  const w = new Writer(server, id, payload(50, 1 << 20));
  const d = new Drain(client, id);
  const max = client.maxDatagramPayload;
  let sent = 0;
  h.app = () => {
    w.tick();
    if (h.newStreams(0).includes(id)) d.tick(h.now);
    // Client → server: big datagrams while the client is also acking a download.
    if (sent < 100) {
      const dg = new Uint8Array(max).fill(sent & 0xff);
      new DataView(dg.buffer).setUint32(0, sent++);
      assert(client.sendDatagram(dg));
    }
  };
  assert(h.run(() => d.status === "end", 10_000));
  h.runFor(200);
  const got = h.eventsOf(1, "datagram").map((e) => e.data);
  assertEquals(got.length, 100);
  got.forEach((g, i) => {
    assertEquals(g.length, max);
    assertEquals(new DataView(g.buffer).getUint32(0), i);
  });
  assert(client.stats.packetsSent > 0 && client.stats.bytesSent / client.stats.packetsSent <= 1350);
});

Deno.test("datagrams: under loss some are lost, none duplicated, none retransmitted", () => {
  const { h, sent, ids } = datagramRun(
    { delayMs: 20, jitterMs: 10, loss: 0.2, duplicate: 0.1 },
    2,
  );
  assert(ids.length < sent, "some were lost");
  assert(ids.length > sent * 0.6, `most arrived (${ids.length}/${sent})`);
  assertEquals(new Set(ids).size, ids.length, "no duplicates delivered");
  for (const i of ids) assert(i >= 0 && i < sent);
  // Every DATAGRAM frame that left the client carried a distinct datagram:
  // a lost one was never put into a later packet.
  const onWire = h.tap[0].datagramFrames.map((d) => new DataView(d.buffer).getUint32(0));
  assertEquals(onWire.length, sent, "each datagram went on the wire exactly once");
  assertEquals(new Set(onWire).size, sent);
  assert(h.server.stats.replays > 0, "the link did duplicate packets");
  assertEquals(h.client.stats.datagramsDropped, 0);
});

Deno.test("datagrams: oversized payloads are refused, the queue drops the oldest", () => {
  const h = new Harness({ client: { datagramQueue: 4 } });
  const { client } = h;
  assert(!client.sendDatagram(new Uint8Array(client.maxDatagramPayload + 1)));
  assert(client.sendDatagram(new Uint8Array(client.maxDatagramPayload)));
  const rand = prng(1);
  for (let i = 0; i < 10; i++) client.sendDatagram(datagram(i, rand));
  assertEquals(client.stats.datagramsDropped, 7);
  h.runFor(500);
  const ids = h.eventsOf(1, "datagram").map((e) => new DataView(e.data.buffer).getUint32(0));
  assertEquals(ids, [6, 7, 8, 9]);
});

// ---------------------------------------------------------------- close

Deno.test("close: code and reason reach the peer as a closed event", () => {
  const h = new Harness();
  const { client, server } = h;
  h.runFor(100);
  client.close(CloseCode.KICKED, "kicked by the operator ✓");
  assert(!client.isOpen);
  assert(h.run(() => server.isClosed && client.isClosed, 1000));
  const sc = closedEvent(h, 1);
  assertEquals(
    { code: sc.code, reason: sc.reason, remote: sc.remote },
    { code: CloseCode.KICKED, reason: "kicked by the operator ✓", remote: true },
  );
  const cc = closedEvent(h, 0);
  assertEquals({ code: cc.code, remote: cc.remote }, { code: CloseCode.KICKED, remote: false });
  assertEquals(h.eventsOf(0, "closed").length, 1, "one closed event");
  assertEquals(h.eventsOf(1, "closed").length, 1);
  assertEquals(server.closeInfo, { code: CloseCode.KICKED, reason: "kicked by the operator ✓" });
  assertEquals(client.openStream(), -1);
  assert(!client.sendDatagram(new Uint8Array(1)));
  // A closed session sends nothing more.
  const sentBefore = h.net.sent.slice();
  h.runFor(60_000);
  assertEquals(h.net.sent, sentBefore);
});

Deno.test("shutdown: closes only after every stream completed", () => {
  const h = new Harness({ link: lossy, seed: 3 });
  const { client, server } = h;
  const id = client.openStream();
  const up = payload(8, 600_000);
  const w = new Writer(client, id, up);
  const rs = new Drain(server, id);
  const rc = new Drain(client, id);
  let serverFin = false;
  h.app = () => {
    w.tick();
    rc.tick(h.now);
    if (h.newStreams(1).includes(id)) {
      rs.tick(h.now);
      if (rs.status === "end" && !serverFin) {
        server.streamWrite(id, new Uint8Array([1, 2, 3]));
        server.streamFinish(id);
        serverFin = true;
      }
    }
  };
  h.runFor(30);
  client.shutdown(CloseCode.SHUTDOWN, "client stopping");
  assert(client.isOpen, "still open while a stream is active");
  assertEquals(client.openStream(), -1, "no new streams after shutdown");
  assert(h.run(() => server.isClosed, 30_000), "the session eventually closed");
  assertEquals(rs.data, up, "everything written before shutdown was delivered");
  assertEquals(rc.data, Uint8Array.from([1, 2, 3]));
  const ev = closedEvent(h, 1);
  assertEquals({ code: ev.code, reason: ev.reason }, {
    code: CloseCode.SHUTDOWN,
    reason: "client stopping",
  });
  assert(ev.at >= rs.doneAt, "closed only after the stream ended");
  assert(client.isClosed);
});

Deno.test("shutdown with no streams closes at once", () => {
  const h = new Harness();
  h.client.shutdown(CloseCode.SHUTDOWN, "bye");
  assert(h.run(() => h.server.isClosed, 500));
  assertEquals(closedEvent(h, 1).reason, "bye");
});

// ------------------------------------------------------- idle / keepalive

Deno.test("idle timeout: a cut link closes both sides with IDLE_TIMEOUT", () => {
  const idle = 5000;
  const h = new Harness({
    client: { idleTimeout: idle, maxCwnd: 64 * 1024 },
    server: { idleTimeout: idle },
  });
  const { client, server } = h;
  const id = client.openStream();
  // A transfer that is still running when the link is cut.
  const w = new Writer(client, id, payload(9, 8 << 20));
  const d = new Drain(server, id);
  h.app = () => {
    w.tick();
    if (h.newStreams(1).includes(id)) d.tick(h.now);
  };
  h.runFor(300);
  assert(d.bytes > 0 && d.status === "open", "transfer in progress");
  const cutAt = h.now;
  h.net.profiles[0].loss = 1;
  h.net.profiles[1].loss = 1;
  assert(h.run(() => client.isClosed && server.isClosed, 3 * idle));
  for (const side of [0, 1] as const) {
    const ev = closedEvent(h, side);
    assertEquals(ev.code, CloseCode.IDLE_TIMEOUT);
    assertEquals(ev.remote, false);
    // The last packet arrived between the cut and one link delay after it.
    assert(ev.at >= cutAt + idle - 1, `side ${side} closed too early: ${ev.at} (cut ${cutAt})`);
    assert(
      ev.at <= cutAt + idle + clean.delayMs + 1,
      `side ${side} closed late: ${ev.at} (cut ${cutAt})`,
    );
  }
  // Probes went out meanwhile (backing off), then nothing after the close.
  const sent = h.net.sent.slice();
  h.runFor(60_000);
  assertEquals(h.net.sent, sent);
});

Deno.test("keepalive: pings keep an idle session open past idleTimeout", () => {
  const h = new Harness({
    client: { idleTimeout: 3000, keepalive: 1000 },
    server: { idleTimeout: 3000, keepalive: 1000 },
  });
  h.runFor(20_000);
  assert(h.client.isOpen && h.server.isOpen, "still open after 6x the idle timeout");
  assert(h.tap[0].pings >= 10, `client pinged ${h.tap[0].pings} times`);
  assertEquals(h.eventsOf(0, "closed").length, 0);
  // Control: without keepalive (it exceeds the idle timeout) the same session dies.
  const h2 = new Harness({
    client: { idleTimeout: 3000, keepalive: 60_000 },
    server: { idleTimeout: 3000, keepalive: 60_000 },
  });
  h2.runFor(20_000);
  assert(h2.client.isClosed && h2.server.isClosed);
  assertEquals(closedEvent(h2, 0).code, CloseCode.IDLE_TIMEOUT);
});

// ---------------------------------------------------------- stream limit

Deno.test("stream limit: opening beyond the peer's maxStreams returns -1", () => {
  const h = new Harness({ server: { maxStreams: 3 }, client: { maxStreams: 2 } });
  const { client, server } = h;
  const ids = [client.openStream(), client.openStream(), client.openStream()];
  assertEquals(ids, [0, 2, 4]);
  assertEquals(client.openStream(), -1, "fourth stream refused locally");
  const sids = [server.openStream(), server.openStream()];
  assertEquals(sids, [1, 3]);
  assertEquals(server.openStream(), -1);
  // Completing one stream in both directions frees a slot.
  client.streamFinish(0);
  const d = new Drain(server, 0);
  const d2 = new Drain(client, 0);
  h.app = () => {
    if (h.newStreams(1).includes(0)) {
      d.tick(h.now);
      if (d.status === "end") server.streamFinish(0);
    }
    d2.tick(h.now);
  };
  // (The client knows only its own three streams: the server's sent nothing yet.)
  assertEquals(client.streamCount, 3);
  assert(h.run(() => client.streamCount === 2, 2000), "client dropped the finished stream");
  assertEquals(client.openStream(), 6);
  assertEquals(client.openStream(), -1);
  // Data on the new stream is accepted (not refused) by the server.
  client.streamWrite(6, new Uint8Array([42]));
  client.streamFinish(6);
  const d6 = new Drain(server, 6);
  h.app = () => {
    if (h.newStreams(1).includes(6)) d6.tick(h.now);
  };
  assert(h.run(() => d6.status !== "open", 2000));
  assertEquals(d6.status, "end");
  assertEquals(d6.data, Uint8Array.from([42]));
  assertEquals(h.tap[1].resets.length, 0, "nothing was refused");
});

Deno.test("stream limit: a peer exceeding maxStreams gets its extra streams refused", () => {
  // The client is lied to: it believes the server accepts 10, the server takes 2.
  const tapC = new TapProtector();
  const tapS = new TapProtector();
  const client = makeSession(true, base, { maxStreams: 10 }, tapC);
  const server = makeSession(false, { ...base, maxStreams: 2 }, base, tapS);
  const net = new SimNet(client, server, [clean, clean], 1);
  const ids = [0, 1, 2, 3].map(() => client.openStream());
  for (const id of ids) client.streamWrite(id, new Uint8Array([id]));
  for (let i = 0; i < 100; i++) net.step();
  const opened: number[] = [];
  let ev;
  while ((ev = server.pollEvent())) if (ev.type === "stream") opened.push(ev.id);
  assertEquals(opened, [0, 2]);
  assertEquals(tapS.resets.map((r) => [r.id, r.code]), [[4, 1], [6, 1]], "REFUSED");
  assertEquals(client.streamRead(4, scratch), ReadResult.RESET);
  assertEquals(client.streamRead(6, scratch), ReadResult.RESET);
  assert(client.isOpen && server.isOpen);
});

// ------------------------------------------------------ packet numbers

Deno.test("packet numbers are never reused; retransmissions go out under new numbers", () => {
  const h = new Harness({ link: lossy, seed: 21 });
  const { client, server } = h;
  const ids = [client.openStream(), client.openStream()];
  const data = [payload(30, 800_000), payload(31, 300_000)];
  const ws = ids.map((id, i) => new Writer(client, id, data[i]));
  const ds = ids.map((id) => new Drain(server, id));
  // The server echoes a bit so both directions carry data.
  const back = server.openStream();
  const wb = new Writer(server, back, payload(32, 200_000));
  const db = new Drain(client, back);
  h.app = () => {
    ws.forEach((w) => w.tick());
    wb.tick();
    if (h.newStreams(0).includes(back)) db.tick(h.now);
    for (const d of ds) if (h.newStreams(1).includes(d.id)) d.tick(h.now);
  };
  const ok = h.run(() => ds.every((d) => d.status === "end") && db.status === "end", 60_000);
  assert(ok);
  ds.forEach((d, i) => assertEquals(d.data, data[i]));
  for (const side of [0, 1] as const) {
    const pns = h.tap[side].pns;
    assertEquals(pns.length, h.s[side].stats.packetsSent);
    assertEquals(new Set(pns).size, pns.length, `side ${side}: a packet number was reused`);
    for (let i = 1; i < pns.length; i++) assertEquals(pns[i], pns[i - 1] + 1, "consecutive");
  }
  assertEquals(server.stats.replays, 0, "the receiver never saw a repeated number");
  assertEquals(client.stats.replays, 0);
  assert(client.stats.packetsLost > 0 && client.stats.retransmittedBytes > 0);
  // Every retransmitted byte range went out under a later packet number than
  // every earlier copy of any byte in it.
  let retransmitted = 0;
  const frames = h.tap[0].streamFrames.filter((f) => f.len > 0);
  const byStream = new Map<number, StreamFrameRec[]>();
  for (const f of frames) {
    if (!byStream.has(f.id)) byStream.set(f.id, []);
    byStream.get(f.id)!.push(f);
  }
  for (const list of byStream.values()) {
    // Sweep in send order, remembering the covered ranges and their last pn.
    const seen: StreamFrameRec[] = [];
    for (const f of list) {
      for (const e of seen) {
        if (e.offset < f.offset + f.len && f.offset < e.offset + e.len) {
          assert(f.pn > e.pn, `bytes re-sent under pn ${f.pn} after pn ${e.pn}`);
          retransmitted++;
        }
      }
      seen.push(f);
    }
  }
  assert(retransmitted > 10, `retransmissions observed: ${retransmitted}`);
});

// ------------------------------------------------------- head of line

function holRun(link: LinkProfile, seed: number) {
  const h = new Harness({
    link,
    seed,
    // Bound the bulk rate (cwnd / RTT) so it lasts long enough to observe.
    client: { maxCwnd: 64 * 1024 },
  });
  const { client, server } = h;
  const bulk = client.openStream();
  const bulkData = payload(40, 3 << 20);
  const wb = new Writer(client, bulk, bulkData);
  const db = new Drain(server, bulk);
  let small = -1;
  let ws: Writer | null = null;
  let ds: Drain | null = null;
  const smallData = payload(41, 3000);
  const startSmall = 400;
  h.app = () => {
    wb.tick();
    if (h.newStreams(1).includes(bulk)) db.tick(h.now);
    if (small < 0 && h.now >= startSmall) {
      small = client.openStream();
      ws = new Writer(client, small, smallData);
      ds = new Drain(server, small);
    }
    ws?.tick();
    if (ds && h.newStreams(1).includes(small)) ds.tick(h.now);
  };
  assert(h.run(() => db.status === "end" && ds?.status === "end", 60_000));
  assertEquals(db.data, bulkData);
  assertEquals(ds!.data, smallData);
  return {
    smallTime: ds!.doneAt - startSmall,
    bulkTime: db.doneAt - startSmall,
    lost: client.stats.packetsLost,
  };
}

Deno.test("head-of-line: a small stream beside a lossy bulk stream finishes in near clean-link time", () => {
  const rtt = 2 * lossy.delayMs;
  const ref = holRun({ ...lossy, loss: 0, jitterMs: 0 }, 1);
  assert(ref.smallTime <= 2 * rtt, `clean small stream took ${ref.smallTime} ms`);
  assert(ref.bulkTime > 10 * rtt, `clean bulk took ${ref.bulkTime} ms (should be long)`);
  for (const seed of [1, 2, 3]) {
    const r = holRun(lossy, seed);
    assert(r.lost > 20, `seed ${seed}: the bulk stream lost packets (${r.lost})`);
    // At most a loss-detection round (plus jitter) later than on a clean link,
    // however many of the bulk stream's packets are being recovered meanwhile.
    assert(
      r.smallTime <= ref.smallTime + 3 * rtt,
      `seed ${seed}: small stream took ${r.smallTime} ms vs ${ref.smallTime} ms clean`,
    );
    assert(
      r.smallTime * 10 < r.bulkTime,
      `seed ${seed}: small ${r.smallTime} ms vs bulk ${r.bulkTime} ms`,
    );
  }
});
