import { assert, assertEquals } from "../support/assert.ts";
import { carrierConformance } from "../conformance/carrier.ts";
import { MemoryNetwork } from "../../shared/carrier/memory.ts";
import { UdpDialer, UdpListener } from "../../shared/carrier/udp.ts";
import { FecDialer, FecListener, type FecMode, parseFecMode } from "../../shared/carrier/fec.ts";
import type { CarrierLink, Endpoint } from "../../shared/carrier/carrier.ts";

const FIXED: FecMode = { kind: "fixed", k: 10, m: 3 };

carrierConformance("fec over memory carrier", () => {
  const net = new MemoryNetwork();
  const inner = net.listen();
  return Promise.resolve({
    listener: new FecListener(inner, { mode: FIXED }),
    dialer: new FecDialer(net.dialer(), { mode: FIXED }),
    server: inner.local,
    mtu: 1343,
    sendStranger(bytes: Uint8Array) {
      net.inject(1, inner.local.port, bytes);
      return Promise.resolve();
    },
    close: () => Promise.resolve(),
  });
});

carrierConformance("fec over udp carrier", () => {
  const inner = UdpListener.open("127.0.0.1", 0, { impl: "ffi" });
  const stranger = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  return Promise.resolve({
    listener: new FecListener(inner, { mode: FIXED }),
    dialer: new FecDialer(new UdpDialer(), { mode: FIXED }),
    server: { transport: "udp", hostname: "127.0.0.1", port: inner.local.port },
    mtu: 1343,
    // 10:3 sends 30% more datagrams than the burst: the loopback socket buffers take 128 whole.
    burst: 128,
    async sendStranger(bytes: Uint8Array) {
      if (bytes.length > 0) await stranger.send(bytes, inner.local);
    },
    close() {
      stranger.close();
      return Promise.resolve();
    },
  });
}, { ignore: Deno.build.os !== "linux" });

/** A seeded generator in [0, 1). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** A server echo over a lossy memory network and one client link. */
async function lossyPair(loss: number, client: FecMode, server: FecMode) {
  const r = rng(7);
  const net = new MemoryNetwork(() => r() < loss);
  const inner = net.listen();
  const listener = new FecListener(inner, { mode: server });
  const got: Uint8Array[] = [];
  let from: Endpoint | null = null;
  const serverRun = listener.run((d, f) => {
    from = f;
    got.push(d.slice());
  });
  const link = await new FecDialer(net.dialer(), { mode: client }).dial(inner.local) as
    & CarrierLink
    & { stats(): { paritySent: number; ratio: string; recovered: number } };
  const back: Uint8Array[] = [];
  const linkRun = link.run((d) => back.push(d.slice()));
  return {
    net,
    listener,
    link,
    got,
    back,
    from: () => from,
    async close() {
      link.close();
      listener.close();
      await Promise.all([serverRun, linkRun]);
    },
  };
}

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("fec: at 10% loss a fixed 10:3 delivers nearly every datagram", async () => {
  const p = await lossyPair(0.1, FIXED, FIXED);
  try {
    const n = 3000;
    for (let i = 0; i < n; i++) {
      const d = new Uint8Array(200);
      d[0] = i >> 8;
      d[1] = i & 0xff;
      d.fill(7, 2);
      p.link.send(d);
      if (i % 50 === 49) await tick(1);
    }
    await tick(100);
    // Binomial: a 13-shard group fails when more than 3 of 13 are lost at 10%: 3.4% of groups;
    // such groups still deliver the data that arrived. Expected delivery ≈ 99.3%.
    const delivered = new Set(p.got.map((d) => (d[0] << 8) | d[1])).size;
    assert(delivered / n >= 0.97, `delivered ${delivered} of ${n}`);
    const s = p.listener.stats();
    assert(s.recovered > 150, `recovered ${s.recovered} (about 10% of 3000 lost)`);
    assertEquals(p.got.length, delivered, "each datagram once");
  } finally {
    await p.close();
  }
});

Deno.test("fec: auto sends no parity on a clean path and some at 10% loss", async () => {
  const clean = await lossyPair(0, { kind: "auto" }, { kind: "auto" });
  try {
    for (let round = 0; round < 8; round++) {
      for (let i = 0; i < 100; i++) clean.link.send(new Uint8Array(300).fill(1));
      // The server answers, so reports flow both ways.
      const ep = clean.from();
      if (ep) { for (let i = 0; i < 50; i++) clean.listener.send(new Uint8Array(300).fill(2), ep); }
      await tick(150);
    }
    assertEquals(clean.link.stats().paritySent, 0, "clean: no parity from the client");
    assertEquals(clean.listener.stats().paritySent, 0, "clean: no parity from the server");
  } finally {
    await clean.close();
  }
  const lossy = await lossyPair(0.1, { kind: "auto" }, { kind: "auto" });
  try {
    for (let round = 0; round < 12; round++) {
      for (let i = 0; i < 100; i++) lossy.link.send(new Uint8Array(300).fill(1));
      const ep = lossy.from();
      if (ep) {
        for (let i = 0; i < 100; i++) lossy.listener.send(new Uint8Array(300).fill(2), ep);
      }
      await tick(150);
    }
    assert(lossy.link.stats().paritySent > 0, "lossy: the client adds parity");
    assert(lossy.listener.stats().paritySent > 0, "lossy: the server adds parity");
    assert(lossy.listener.stats().localLoss > 0.05, "the server measures the loss");
  } finally {
    await lossy.close();
  }
});

Deno.test("fec: a client's fixed ratio is asked of the server; auto leaves the server's own", async () => {
  const p = await lossyPair(0, { kind: "fixed", k: 8, m: 2 }, { kind: "off" });
  try {
    p.link.send(new Uint8Array(100));
    await tick(50);
    const ep = p.from()!;
    for (let i = 0; i < 20; i++) p.listener.send(new Uint8Array(100), ep);
    await tick(50);
    assertEquals(p.listener.stats(ep).ratio, "8:2");
  } finally {
    await p.close();
  }
  const q = await lossyPair(0, { kind: "auto" }, { kind: "fixed", k: 5, m: 1 });
  try {
    q.link.send(new Uint8Array(100));
    await tick(50);
    const ep = q.from()!;
    q.listener.send(new Uint8Array(100), ep);
    await tick(50);
    assertEquals(q.listener.stats(ep).ratio, "5:1");
  } finally {
    await q.close();
  }
});

Deno.test("fec: strangers' bytes and forged reports change nothing and throw nothing", async () => {
  const p = await lossyPair(0, FIXED, FIXED);
  try {
    // The real client first: its path exists and has a ratio.
    p.link.send(new Uint8Array(50).fill(3));
    await tick(20);
    const ep = p.from()!;
    const before = p.listener.stats(ep);
    const port = p.listener.local.port;
    for (
      const junk of [
        new Uint8Array(0),
        new Uint8Array(3),
        new Uint8Array(9).fill(0xff),
        crypto.getRandomValues(new Uint8Array(1400)),
        crypto.getRandomValues(new Uint8Array(40)),
      ]
    ) p.net.inject(999, port, junk);
    await tick(20);
    // FEC authenticates nothing: a random datagram may pass as data from the stranger's own
    // endpoint (the session layer drops it); the real client's path is untouched.
    assertEquals(p.listener.stats(ep), before, "the client's path is unchanged");
    p.link.send(new Uint8Array(60).fill(4));
    await tick(20);
    assert(p.got.some((d) => d.length === 60 && d[0] === 4), "the real client still gets through");
  } finally {
    await p.close();
  }
});

Deno.test("fec: no plain group counter on the wire", async () => {
  const seen: Uint8Array[] = [];
  const net = new MemoryNetwork((d) => {
    seen.push(d.slice(0, 2));
    return false;
  });
  const inner = net.listen();
  const listener = new FecListener(inner, { mode: FIXED });
  const run = listener.run(() => {});
  const link = await new FecDialer(net.dialer(), { mode: FIXED }).dial(inner.local);
  const linkRun = link.run(() => {});
  try {
    for (let i = 0; i < 40; i++) link.send(crypto.getRandomValues(new Uint8Array(100)));
    await tick(30);
    const firsts = seen.map((b) => (b[0] << 8) | b[1]);
    let same = 0;
    for (let i = 1; i < firsts.length; i++) if (firsts[i] === firsts[i - 1]) same++;
    assert(same < 5, `the first two bytes repeat ${same} times in ${firsts.length}`);
  } finally {
    link.close();
    listener.close();
    await Promise.all([run, linkRun]);
  }
});

Deno.test("fec: parseFecMode", () => {
  assertEquals(parseFecMode("off"), { kind: "off" });
  assertEquals(parseFecMode("AUTO"), { kind: "auto" });
  assertEquals(parseFecMode("10:3"), { kind: "fixed", k: 10, m: 3 });
  for (const bad of ["", "0:0", "3:4", "65:1", "x"]) assertEquals(parseFecMode(bad), null, bad);
});
