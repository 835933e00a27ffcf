/**
 * The conformance suite every carrier passes (`shared/carrier/carrier.ts`):
 * datagrams of every size up to the MTU both ways and byte-exact, batches,
 * several links on one listener kept apart, strangers' bytes, oversize
 * datagrams, close with a receive pending and use after close. Unreliable
 * carriers are run on paths that do not lose (loopback, memory), so the suite
 * expects every datagram; reliable ones must also keep the order.
 * @module
 */

import { suiteTest } from "./suite.ts";
import { assert, assertEquals } from "../support/assert.ts";
import type {
  CarrierDialer,
  CarrierLink,
  CarrierListener,
  Endpoint,
} from "../../shared/carrier/carrier.ts";

/** A carrier under test. */
export interface CarrierHarness {
  /** The server side, not yet running (the suite runs it). */
  listener: CarrierListener;
  /** Dials links to it. */
  dialer: CarrierDialer;
  /** The address the dialer dials. */
  server: Deno.NetAddr;
  /** Largest datagram the session would send over this carrier. */
  mtu: number;
  /**
   * The links' kind when it differs from the listener's (a TURN link reaches
   * a plain UDP listener through the relay); default the listener's.
   */
  linkKind?: string;
  /**
   * Datagrams queued in one task that the path takes whole (default 256);
   * lower only for a transport whose kernel buffer cannot be raised (Deno's
   * own UDP socket keeps the default receive buffer of about 200 KiB).
   */
  burst?: number;
  /**
   * Makes a stranger send `bytes` to the listener's port the way this
   * carrier's transport would carry them (a UDP datagram, a TCP connection's
   * bytes); resolves once sent.
   */
  sendStranger(bytes: Uint8Array): Promise<void>;
  /** Releases whatever the harness needed besides the listener (idempotent). */
  close(): Promise<void>;
}

/** Options for {@link carrierConformance}. */
export interface CarrierConformanceOptions {
  /** Skip every test (e.g. not root); the caller prints why. */
  ignore?: boolean;
}

function payload(size: number, seed: number): Uint8Array {
  const b = new Uint8Array(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  // The first two bytes name the datagram, so replies can be matched.
  if (size >= 2) {
    b[0] = seed >> 8;
    b[1] = seed & 0xff;
  }
  return b;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Waits until `cond()` or `ms` passed; returns `cond()`. */
async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  const end = performance.now() + ms;
  while (!cond() && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
  return cond();
}

/** A running listener that echoes every datagram back to its sender and records them. */
class Echo {
  readonly received: { data: Uint8Array; from: Endpoint }[] = [];
  readonly done: Promise<void>;
  echo = true;
  constructor(readonly listener: CarrierListener) {
    this.done = listener.run((data, from) => {
      this.received.push({ data: data.slice(), from });
      if (this.echo) listener.send(data, from);
    });
  }
}

/** A link with everything it received. */
class Client {
  readonly received: Uint8Array[] = [];
  readonly done: Promise<void>;
  constructor(readonly link: CarrierLink) {
    this.done = link.run((d) => this.received.push(d.slice()));
  }
}

/**
 * Registers the suite under `label`; `make` builds a fresh carrier for each
 * test, which the suite closes.
 */
export function carrierConformance(
  label: string,
  make: () => Promise<CarrierHarness>,
  opts: CarrierConformanceOptions = {},
): void {
  const test = suiteTest<CarrierHarness>(label, make, async (h) => {
    h.listener.close();
    await h.close();
  }, opts.ignore ?? false);

  test("declares what it is", (h) => {
    for (const c of [h.listener]) {
      assert(typeof c.kind === "string" && c.kind.length > 0, "kind");
      assert(Number.isInteger(c.overhead) && c.overhead >= 0, "overhead");
      assert(c.maxDatagram >= h.mtu, `maxDatagram ${c.maxDatagram} below the MTU ${h.mtu}`);
    }
    assert(h.listener.local.port > 0, "listener has a port");
    return Promise.resolve();
  });

  test("datagrams of every size from 1 byte to the MTU, both ways, byte-exact", async (h) => {
    const echo = new Echo(h.listener);
    const c = new Client(await h.dialer.dial(h.server));
    try {
      assertEquals(c.link.kind, h.linkKind ?? h.listener.kind);
      const sizes = Array.from({ length: h.mtu }, (_, i) => i + 1);
      const chunk = Math.min(64, h.burst ?? 64);
      for (let i = 0; i < sizes.length; i += chunk) {
        const part = sizes.slice(i, i + chunk);
        for (const s of part) c.link.send(payload(s, s));
        c.link.flush();
        const want = i + part.length;
        assert(
          await until(() => c.received.length >= want),
          `${c.received.length} of ${want} echoes back`,
        );
      }
      const bySize = new Map(c.received.map((d) => [d.length, d]));
      for (const s of sizes) {
        const d = bySize.get(s);
        assert(d !== undefined, `no echo of the ${s}-byte datagram`);
        assert(equalBytes(d, payload(s, s)), `${s}-byte datagram changed on the way`);
      }
      assertEquals(echo.received.length, sizes.length);
      if (h.listener.reliable) assertEquals(c.received.map((d) => d.length), sizes);
    } finally {
      c.link.close();
    }
  });

  test("a batch queued in one task arrives whole", async (h) => {
    const n = h.burst ?? 256;
    const all = Array.from({ length: n }, (_, i) => i);
    const echo = new Echo(h.listener);
    echo.echo = false;
    const c = new Client(await h.dialer.dial(h.server));
    try {
      for (let i = 0; i < n; i++) c.link.send(payload(100 + (i % 900), i));
      assert(await until(() => echo.received.length >= n), `${echo.received.length} of ${n}`);
      const seeds = echo.received.map((r) => (r.data[0] << 8) | r.data[1]);
      if (h.listener.reliable) assertEquals(seeds, all);
      else assertEquals([...seeds].sort((a, b) => a - b), all);
      // The server answers a batch the same way, to one endpoint.
      const to = echo.received[0].from;
      for (let i = 0; i < n; i++) h.listener.send(payload(1 + i, 1000 + i), to);
      h.listener.flush();
      assert(await until(() => c.received.length >= n), `${c.received.length} of ${n} back`);
    } finally {
      c.link.close();
    }
  });

  test("two links on one listener are two endpoints, answered apart", async (h) => {
    const echo = new Echo(h.listener);
    const a = new Client(await h.dialer.dial(h.server));
    const b = new Client(await h.dialer.dial(h.server));
    try {
      a.link.send(payload(40, 1));
      b.link.send(payload(50, 2));
      a.link.flush();
      b.link.flush();
      assert(await until(() => a.received.length >= 1 && b.received.length >= 1), "both answered");
      assertEquals(a.received[0].length, 40);
      assertEquals(b.received[0].length, 50);
      // Which endpoint is which, by what each sent (two connections may arrive in any order).
      const byLength = (n: number) => echo.received.find((r) => r.data.length === n)!.from;
      const [ea, eb] = [byLength(40), byLength(50)];
      assert(ea.key !== eb.key, "distinct endpoint keys");
      assertEquals(ea.carrier, eb.carrier);
      // Same path again: the same key.
      a.link.send(payload(60, 3));
      assert(await until(() => echo.received.length >= 3), "third datagram");
      const third = echo.received[2];
      assertEquals(third.from.key, third.data.length === 60 ? ea.key : eb.key);
      await new Promise((r) => setTimeout(r, 50));
      assertEquals(a.received.length, 2);
      assertEquals(b.received.length, 1);
    } finally {
      a.link.close();
      b.link.close();
    }
  });

  test("a stranger's bytes break nothing", async (h) => {
    const echo = new Echo(h.listener);
    echo.echo = false;
    const junk = [
      new Uint8Array(0),
      new Uint8Array([0]),
      new Uint8Array([0xff, 0xff, 0xff, 0xff]),
      payload(3000, 7),
      new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
      payload(64, 9),
    ];
    for (const j of junk) await h.sendStranger(j);
    // The listener still serves a real client afterwards.
    echo.echo = true;
    const c = new Client(await h.dialer.dial(h.server));
    try {
      c.link.send(payload(500, 11));
      assert(await until(() => c.received.length >= 1), "real client answered after junk");
      assert(equalBytes(c.received[0], payload(500, 11)));
    } finally {
      c.link.close();
    }
  });

  test("oversize datagrams are dropped, not thrown", async (h) => {
    const echo = new Echo(h.listener);
    const c = new Client(await h.dialer.dial(h.server));
    try {
      c.link.send(new Uint8Array(h.listener.maxDatagram + 1));
      c.link.send(payload(10, 5));
      c.link.flush();
      assert(await until(() => c.received.length >= 1), "the small one still goes");
      await new Promise((r) => setTimeout(r, 50));
      assertEquals(c.received.map((d) => d.length), [10]);
      assertEquals(echo.received.length, 1);
    } finally {
      c.link.close();
    }
  });

  test("close ends run, is idempotent, and later sends are ignored", async (h) => {
    const echo = new Echo(h.listener);
    const c = new Client(await h.dialer.dial(h.server));
    c.link.send(payload(20, 1));
    assert(await until(() => c.received.length >= 1), "answered before close");
    c.link.close();
    c.link.close();
    await c.done;
    c.link.send(payload(20, 2));
    c.link.flush();
    h.listener.close();
    h.listener.close();
    await echo.done;
    h.listener.send(payload(20, 3), echo.received[0].from);
    h.listener.flush();
  });
}
