/**
 * Congestion control in virtual time, through a bottleneck with a deep buffer
 * (the situation of a busy receiver whose 8 MiB socket buffer, or a userspace
 * hop, would hold seconds of data): the sender must leave startup, keep the
 * queue short and still fill the link, so that a small request beside a bulk
 * download waits about as long as alone.
 */

import { assert } from "../support/assert.ts";
import { ReadResult, Session } from "../../shared/session/session.ts";
import { ClearProtector, type LinkProfile, SimNet } from "../support/simnet.ts";

const RATE = 2500; // bytes per ms: 20 Mbit/s
const ONE_WAY = 20; // ms: 40 ms RTT

function pair(): [Session, Session] {
  const peer = { maxData: 32 << 20, maxStreamData: 8 << 20, maxStreams: 8192 };
  const a = new Session({ protector: new ClearProtector(), isClient: true, peer, now: 0 });
  const b = new Session({ protector: new ClearProtector(), isClient: false, peer, now: 0 });
  return [a, b];
}

/** A client and a server over `down` (server → client) and a clean uplink. */
class Bed {
  readonly client: Session;
  readonly server: Session;
  readonly net: SimNet;
  /** The bulk download's stream (the same id on both sides), or -1. */
  bulkId = -1;
  /** Bytes of the bulk the client has read. */
  bulkRead = 0;
  private readonly buf = new Uint8Array(65536);
  private readonly chunk = new Uint8Array(256 * 1024);
  private readonly serverStreams = new Set<number>();

  constructor(down: LinkProfile) {
    [this.client, this.server] = pair();
    const up: LinkProfile = { delayMs: ONE_WAY, jitterMs: 0, loss: 0, duplicate: 0 };
    this.net = new SimNet(this.client, this.server, [up, down], 5);
  }

  /** Asks for the bulk download: the server answers the first byte with an endless stream. */
  startBulk(): void {
    this.bulkId = this.client.openStream();
    this.client.streamWrite(this.bulkId, new Uint8Array([1]));
  }

  /** One small request: 100 bytes up with FIN, 1,000 bytes back with FIN; ms it took. */
  smallRequest(limitMs = 10_000): number {
    const t0 = this.net.now;
    const id = this.client.openStream();
    this.client.streamWrite(id, new Uint8Array(100).fill(2));
    this.client.streamFinish(id);
    let done = false;
    this.run(limitMs, () => {
      for (;;) {
        const n = this.client.streamRead(id, this.buf);
        if (n === ReadResult.END) done = true;
        if (n <= 0) break;
      }
      return done;
    });
    assert(done, "the small request finished");
    return this.net.now - t0;
  }

  /** Runs the bed for `ms` of virtual time, or until `until` says so. */
  run(ms: number, until: () => boolean = () => false): void {
    const end = this.net.now + ms;
    while (this.net.now < end) {
      this.serve();
      this.drainClient();
      if (until()) return;
      this.net.step();
    }
  }

  /** Server: the bulk stream is kept full; others get 1,000 bytes after their FIN. */
  private serve(): void {
    let ev;
    while ((ev = this.server.pollEvent())) {
      if (ev.type === "stream") this.serverStreams.add(ev.id);
    }
    for (const id of this.serverStreams) {
      if (id === this.bulkId) {
        while (this.server.streamRead(id, this.buf) > 0);
        while (this.server.streamWrite(id, this.chunk) > 0);
        continue;
      }
      for (;;) {
        const n = this.server.streamRead(id, this.buf);
        if (n === ReadResult.END) {
          this.server.streamWrite(id, new Uint8Array(1000).fill(3));
          this.server.streamFinish(id);
          this.serverStreams.delete(id);
        }
        if (n <= 0) break;
      }
    }
  }

  /** Client: reads the bulk stream as fast as it comes. */
  private drainClient(): void {
    while (this.client.pollEvent());
    if (this.bulkId < 0) return;
    for (;;) {
      const n = this.client.streamRead(this.bulkId, this.buf);
      if (n <= 0) break;
      this.bulkRead += n;
    }
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

for (
  const [name, loss] of [["clean", 0], ["2% loss", 0.02]] as const
) {
  Deno.test(`sim: a small request beside a bulk download through a deep buffer, ${name}`, () => {
    const down: LinkProfile = {
      delayMs: ONE_WAY,
      jitterMs: 0,
      loss,
      duplicate: 0,
      rate: RATE,
      queueBytes: 4 << 20,
    };
    const bed = new Bed(down);
    const alone: number[] = [];
    for (let i = 0; i < 5; i++) alone.push(bed.smallRequest());
    bed.startBulk();
    bed.run(4000); // past startup and drain
    const cc = bed.server.cc;
    assert(cc.mode === "probe_bw" || cc.mode === "probe_rtt", `left startup (mode ${cc.mode})`);
    const read0 = bed.bulkRead;
    const t0 = bed.net.now;
    const loaded: number[] = [];
    for (let i = 0; i < 10; i++) {
      loaded.push(bed.smallRequest());
      bed.run(100);
    }
    const rate = (bed.bulkRead - read0) / (bed.net.now - t0);
    const waits = bed.net.queueWaits[1].filter(([at]) => at >= t0).map(([, w]) => w);
    const ratio = median(loaded) / median(alone);
    const detail =
      `alone ${median(alone).toFixed(1)} ms, loaded ${median(loaded).toFixed(1)} ms (${
        ratio.toFixed(2)
      }×), bulk ${(rate / RATE * 100).toFixed(0)}% of the link, ` +
      `median queue wait ${median(waits).toFixed(1)} ms`;
    if (Deno.env.get("OSTP_SIM_VERBOSE")) console.log(detail);
    assert(ratio <= 1.5, `latency under load: ${detail}`);
    assert(rate >= RATE * (loss > 0 ? 0.75 : 0.85), `bulk throughput: ${detail}`);
    assert(median(waits) < ONE_WAY, `standing queue: ${detail}`);
  });
}
