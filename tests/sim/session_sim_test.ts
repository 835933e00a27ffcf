import { assert, assertEquals } from "../support/assert.ts";
import { ReadResult, Session, type SessionConfig } from "../../shared/session/session.ts";
import { ClearProtector, type LinkProfile, prng, SimNet } from "../support/simnet.ts";

function pair(config: Partial<SessionConfig> = {}): [Session, Session] {
  const peer = { maxData: 32 << 20, maxStreamData: 8 << 20, maxStreams: 8192, ...config };
  const a = new Session({ protector: new ClearProtector(), isClient: true, peer, now: 0, config });
  const b = new Session({ protector: new ClearProtector(), isClient: false, peer, now: 0, config });
  return [a, b];
}

function payload(seed: number, len: number): Uint8Array {
  const r = prng(seed);
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (r() * 256) | 0;
  return out;
}

/** Client opens streams, sends payloads and FIN; server echoes each stream back reversed in role. */
function runEcho(profile: LinkProfile, sizes: number[], seed: number, maxSteps = 2_000_000) {
  const [client, server] = pair();
  const net = new SimNet(client, server, [profile, profile], seed);
  const ids = sizes.map(() => client.openStream());
  const data = sizes.map((n, i) => payload(seed * 100 + i, n));
  const written = sizes.map(() => 0);
  const finished = sizes.map(() => false);
  const received = new Map<number, Uint8Array[]>();
  const echoed = sizes.map(() => [] as Uint8Array[]);
  const serverPending = new Map<number, { buf: Uint8Array; off: number; fin: boolean }>();
  const clientDone = sizes.map(() => false);
  const buf = new Uint8Array(65536);
  for (let step = 0; step < maxSteps && !clientDone.every((x) => x); step++) {
    // Client writes.
    ids.forEach((id, i) => {
      if (written[i] < data[i].length) {
        const n = client.streamWrite(id, data[i].subarray(written[i]));
        if (n > 0) written[i] += n;
      }
      if (written[i] === data[i].length && !finished[i]) {
        client.streamFinish(id);
        finished[i] = true;
      }
    });
    // Server reads every stream it knows and echoes.
    let ev;
    while ((ev = server.pollEvent())) {
      if (ev.type === "stream") received.set(ev.id, []);
    }
    for (const [id, chunks] of received) {
      for (;;) {
        const n = server.streamRead(id, buf);
        if (n > 0) {
          chunks.push(buf.slice(0, n));
          continue;
        }
        if (n === ReadResult.END && !serverPending.has(id)) {
          const all = concat(chunks);
          serverPending.set(id, { buf: all, off: 0, fin: false });
        }
        break;
      }
    }
    for (const [id, p] of serverPending) {
      if (p.off < p.buf.length) {
        const n = server.streamWrite(id, p.buf.subarray(p.off));
        if (n > 0) p.off += n;
      }
      if (p.off === p.buf.length && !p.fin) {
        server.streamFinish(id);
        p.fin = true;
      }
    }
    while (client.pollEvent());
    ids.forEach((id, i) => {
      if (clientDone[i]) return;
      for (;;) {
        const n = client.streamRead(id, buf);
        if (n > 0) {
          echoed[i].push(buf.slice(0, n));
          continue;
        }
        if (n === ReadResult.END) clientDone[i] = true;
        assert(n !== ReadResult.RESET, `stream ${id} reset`);
        break;
      }
    });
    net.step();
  }
  return { client, server, net, data, echoed, clientDone };
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const total = chunks.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

const clean: LinkProfile = { delayMs: 10, jitterMs: 0, loss: 0, duplicate: 0 };
const hostile: LinkProfile = { delayMs: 20, jitterMs: 15, loss: 0.1, duplicate: 0.05 };

Deno.test("sim: streams echo intact on a clean link", () => {
  const r = runEcho(clean, [100_000, 1, 0, 300_000], 7);
  assert(r.clientDone.every((x) => x), "all streams finished");
  r.data.forEach((d, i) => assertEquals(concat(r.echoed[i]), d));
  assertEquals(r.client.stats.packetsLost, 0);
});

Deno.test("sim: concurrent streams intact under 10% loss, reordering and duplication", () => {
  const r = runEcho(hostile, [400_000, 250_000, 64_000, 1_000, 150_000, 0], 42);
  assert(r.clientDone.every((x) => x), "all streams finished");
  r.data.forEach((d, i) => assertEquals(concat(r.echoed[i]), d, `stream ${i}`));
  assert(r.client.stats.packetsLost > 0, "the link really lost packets");
  assert(r.server.stats.replays > 0, "duplicates were dropped by the replay window");
});

Deno.test("sim: several seeds under heavy impairment", () => {
  for (const seed of [3, 11, 29]) {
    const r = runEcho(
      { delayMs: 5, jitterMs: 20, loss: 0.2, duplicate: 0.1 },
      [80_000, 20_000],
      seed,
    );
    assert(r.clientDone.every((x) => x), `seed ${seed}: all finished`);
    r.data.forEach((d, i) => assertEquals(concat(r.echoed[i]), d));
  }
});
