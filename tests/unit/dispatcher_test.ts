/**
 * The server dispatcher driven in-process: fake peers record every datagram it
 * sends, per destination address, and a real client side (hello, PacketCodec,
 * Session, Connection) sends straight into `dispatcher.handle`. Every test
 * checks the drop counters and that nothing went to a party that should hear
 * nothing.
 */
import type { Endpoint } from "../../shared/carrier/carrier.ts";
import { udpEndpoint } from "../../shared/carrier/udp.ts";
import { assert, assertEquals } from "../support/assert.ts";
import {
  Dispatcher,
  type DispatcherOptions,
  type DropCounters,
  type Peer,
  ROAM_CONFIRMATIONS,
  type ServerSession,
} from "../../server/dispatcher.ts";
import {
  deriveSecrets,
  generateAccessKey,
  type KeySecrets,
  Masker,
} from "../../shared/crypto/keys.ts";
import {
  buildClientHello,
  type ClientHello,
  type HelloParams,
  readServerHello,
} from "../../shared/session/handshake.ts";
import { Connection, type OstpStream } from "../../shared/session/connection.ts";
import { CloseCode, Session } from "../../shared/session/session.ts";
import { decodeHandshakeDatagram, encodeHandshakeDatagram } from "../../shared/wire/handshake.ts";
import { MIN_PACKET_LENGTH, PACKET_HEADER_LENGTH, PacketCodec } from "../../shared/wire/packet.ts";

const PARAMS: HelloParams = {
  maxData: 4 * 1024 * 1024,
  maxStreamData: 1024 * 1024,
  maxStreams: 64,
  maxDatagramSize: 1350,
};

/** A fixed injected wall clock. */
const WALL = 1_700_000_000_000;

/** Map key of a UDP address (or of an endpoint), as the dispatcher keys its maps. */
function addrKey(a: Deno.NetAddr | Endpoint): string {
  return "key" in a ? a.key : udpEndpoint(a).key;
}

function udp(port: number, hostname = "192.0.2.1"): Deno.NetAddr {
  return { transport: "udp", hostname, port };
}

const A = udp(40001);
const B = udp(40002, "198.51.100.7");
const C = udp(40003, "203.0.113.9");
const D = udp(40004, "203.0.113.10");
const E = udp(40005, "203.0.113.11");

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves `p` or rejects after `ms`, always clearing its timer (sanitizers). */
async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `cond` every 10 ms for up to `ms`. */
async function waitUntil(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function zeroDrops(): DropCounters {
  return {
    unauthenticated: 0,
    replayedHandshake: 0,
    staleTimestamp: 0,
    rateLimited: 0,
    sessionCap: 0,
    idCollision: 0,
  };
}

/** Server side of every stream: echo until FIN, then FIN. */
async function echo(st: OstpStream): Promise<void> {
  const buf = new Uint8Array(8192);
  try {
    for (;;) {
      const n = await st.read(buf);
      if (n === null) break;
      let off = 0;
      while (off < n) off += await st.write(buf.subarray(off, n));
    }
    await st.closeWrite();
  } catch {
    // session closed under the stream: expected at teardown
  } finally {
    st.close();
  }
}

/** The client end of one session: a real Session + Connection on a fake address. */
class Client {
  /** Address its datagrams come from (change it to roam). */
  addr: Deno.NetAddr;
  readonly conn: Connection;
  readonly sessionId: number;
  /** While true, datagrams are kept in `held` instead of reaching the server (lost on the way). */
  hold = false;
  readonly held: Uint8Array[] = [];
  /** Copies of every datagram it sent. */
  readonly sentLog: Uint8Array[] = [];

  constructor(
    private readonly h: Harness,
    hello: ClientHello,
    reply: Uint8Array,
    addr: Deno.NetAddr,
  ) {
    const ok = readServerHello(hello, h.masker, reply);
    assert(ok !== null, "client reads the server hello");
    this.addr = addr;
    this.sessionId = hello.sessionId;
    const mtu = Math.min(PARAMS.maxDatagramSize, ok.params.maxDatagramSize);
    const session = new Session({
      protector: new PacketCodec({
        sessionId: hello.sessionId,
        sendKey: ok.keys.initiatorToResponder,
        recvKey: ok.keys.responderToInitiator,
        masker: h.masker,
      }),
      isClient: true,
      peer: ok.params,
      now: performance.now(),
      config: {
        maxDatagramSize: mtu,
        maxData: PARAMS.maxData,
        maxStreamData: PARAMS.maxStreamData,
      },
    });
    this.conn = new Connection(session, (d) => this.transmit(d));
  }

  private transmit(d: Uint8Array): void {
    const copy = d.slice();
    this.sentLog.push(copy);
    if (this.hold) {
      this.held.push(copy);
      return;
    }
    const from = this.addr;
    queueMicrotask(() => this.h.inject(copy, from));
  }

  /** A datagram from the server reached this client. */
  receive(d: Uint8Array): void {
    this.conn.receive(d);
  }

  /** Sends one packet now (an empty DATAGRAM frame), as the real client does to confirm. */
  ping(): void {
    this.conn.session.sendDatagram(new Uint8Array(0));
    this.conn.flush();
  }

  /** Opens a stream, sends `data`, reads the echo back. */
  async echo(data: Uint8Array, st?: OstpStream): Promise<OstpStream> {
    const s = st ?? this.conn.openStream();
    let off = 0;
    while (off < data.length) off += await s.write(data.subarray(off));
    const got = new Uint8Array(data.length);
    let n = 0;
    while (n < data.length) {
      const r = await withTimeout(s.read(got.subarray(n)), 3000, "echo");
      assert(r !== null, "stream ended early");
      n += r;
    }
    assertEquals(got, data, "echoed bytes");
    return s;
  }
}

/** A dispatcher behind fake sockets that remember everything sent per address. */
class Harness {
  readonly secrets: KeySecrets;
  readonly masker: Masker;
  readonly dispatcher: Dispatcher;
  /** Every datagram the dispatcher sent, by destination. */
  readonly sent = new Map<string, Uint8Array[]>();
  /** Addresses at which a client listens. */
  readonly routes = new Map<string, Client>();
  readonly clients: Client[] = [];
  readonly opened: ServerSession[] = [];
  readonly closed: { s: ServerSession; reason: string }[] = [];
  wall = WALL;

  constructor(opts: Partial<DispatcherOptions> = {}, readonly key = generateAccessKey()) {
    this.secrets = deriveSecrets(key);
    this.masker = new Masker(this.secrets.obfsKey);
    this.dispatcher = new Dispatcher({
      keys: [key],
      maxSessions: 1024,
      handshakeRate: 1_000_000,
      handshakeBurst: 1_000_000,
      replayWindowMs: 300_000,
      replayCacheSize: 4096,
      session: {},
      wallClock: () => this.wall,
      ...opts,
    });
    this.dispatcher.onSession = (s) => {
      this.opened.push(s);
      s.conn.onStream = (st) => void echo(st);
    };
    this.dispatcher.onSessionClosed = (s, reason) => this.closed.push({ s, reason });
  }

  private readonly send = (data: Uint8Array, to: Endpoint): void => {
    const copy = data.slice();
    const k = addrKey(to);
    let list = this.sent.get(k);
    if (!list) this.sent.set(k, list = []);
    list.push(copy);
    const c = this.routes.get(k);
    if (c) queueMicrotask(() => c.receive(copy));
  };

  peer(addr: Deno.NetAddr): Peer {
    return { addr: udpEndpoint(addr), send: this.send };
  }

  /** A datagram from `from` arrives at the server socket (a copy, as a socket would give). */
  inject(data: Uint8Array, from: Deno.NetAddr): void {
    this.dispatcher.handle(data.slice(), this.peer(from));
  }

  sentTo(addr: Deno.NetAddr): Uint8Array[] {
    return this.sent.get(addrKey(addr)) ?? [];
  }

  /** Destinations the dispatcher ever sent to, sorted. */
  destinations(): string[] {
    return [...this.sent.keys()].sort();
  }

  hello(unixMs = this.wall, secrets = this.secrets, masker = this.masker): ClientHello {
    return buildClientHello(secrets, masker, PARAMS, unixMs);
  }

  /** Builds a client from an answered hello; it listens at `addr` from now on. */
  client(hello: ClientHello, reply: Uint8Array, addr: Deno.NetAddr): Client {
    const c = new Client(this, hello, reply, addr);
    this.clients.push(c);
    this.routes.set(addrKey(addr), c);
    return c;
  }

  /** Full handshake from `addr`, plus the confirming first packet when `confirm`. */
  async connect(addr: Deno.NetAddr, confirm = true): Promise<Client> {
    const hello = this.hello();
    const before = this.sentTo(addr).length;
    this.inject(hello.datagram, addr);
    const replies = this.sentTo(addr);
    assertEquals(replies.length, before + 1, "one reply to the hello");
    const c = this.client(hello, replies[replies.length - 1], addr);
    if (confirm) {
      c.ping();
      await waitUntil(() => this.session(c).established, 1000, "session confirmed");
    }
    return c;
  }

  /** The server's session of client `c`. */
  session(c: Client): ServerSession {
    const s = [...this.dispatcher.allSessions()].find((s) => s.id === c.sessionId);
    assert(s !== undefined, "server session exists");
    return s;
  }

  /** Closes everything and waits until no timer is left. */
  async close(): Promise<void> {
    for (const c of this.clients) c.conn.close(CloseCode.NORMAL, "test over");
    await sleep(5);
    this.dispatcher.closeAll(CloseCode.SHUTDOWN, "test over");
    await sleep(5);
    for (const c of this.clients) assert(!c.conn.isOpen, "client closed");
    assertEquals(this.dispatcher.sessionCount, 0, "no session left");
  }
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

Deno.test("dispatcher: a good handshake makes one session and one reply; data flows", async () => {
  const h = new Harness();
  try {
    const hello = h.hello();
    h.inject(hello.datagram, A);
    assertEquals(h.dispatcher.handshakes, 1);
    assertEquals(h.dispatcher.sessionCount, 1);
    assertEquals(h.sentTo(A).length, 1, "exactly one reply");
    assertEquals(h.destinations(), [addrKey(A)]);
    assertEquals(h.dispatcher.drops, zeroDrops());
    assertEquals(h.opened.length, 1);
    assertEquals(h.opened[0].id, hello.sessionId);
    assert(!h.opened[0].established, "not established before the first data packet");

    const c = h.client(hello, h.sentTo(A)[0], A);
    c.ping();
    const st = await c.echo(new TextEncoder().encode("hello through the dispatcher"));
    await c.echo(randomBytes(100_000), st);
    await st.closeWrite();
    const tail = new Uint8Array(16);
    assertEquals(await withTimeout(st.read(tail), 3000, "FIN"), null, "server echoes the FIN");
    st.close();

    const s = h.session(c);
    assert(s.established);
    assertEquals(s.addr.address, A);
    assertEquals(s.migrations, 0);
    assertEquals(h.dispatcher.handshakes, 1);
    assertEquals(h.dispatcher.sessionCount, 1);
    assertEquals(h.dispatcher.drops, zeroDrops());
    assertEquals(h.destinations(), [addrKey(A)], "the server spoke only to the client");
  } finally {
    await h.close();
  }
});

Deno.test("dispatcher: a repeated hello is answered again only from its address, before data", async () => {
  const h = new Harness();
  try {
    const hello = h.hello();
    h.inject(hello.datagram, A);
    const first = h.sentTo(A)[0];
    // The client's answer was lost: it repeats message 1 unchanged.
    h.inject(hello.datagram, A);
    h.inject(hello.datagram, A);
    assertEquals(h.sentTo(A).length, 3);
    assertEquals(h.sentTo(A)[1], first, "the identical reply");
    assertEquals(h.sentTo(A)[2], first, "the identical reply");
    assertEquals(h.dispatcher.sessionCount, 1);
    assertEquals(h.dispatcher.handshakes, 1);
    assertEquals(h.dispatcher.drops, zeroDrops());

    // A prober replays it from elsewhere before the client's first packet: silence.
    h.inject(hello.datagram, B);
    assertEquals(h.sentTo(B).length, 0);
    assertEquals(h.dispatcher.drops, { ...zeroDrops(), replayedHandshake: 1 });

    // The client confirms with its first packet (it uses the repeated reply: identical).
    const c = h.client(hello, h.sentTo(A)[2], A);
    c.ping();
    await waitUntil(() => h.session(c).established, 1000, "established");

    // After data: the same hello from the same address is dropped too, with no reply.
    const atA = h.sentTo(A).length;
    h.inject(hello.datagram, A);
    assertEquals(h.sentTo(A).length, atA, "no reply after data");
    h.inject(hello.datagram, B);
    h.inject(hello.datagram, C);
    assertEquals(h.sentTo(B).length, 0);
    assertEquals(h.sentTo(C).length, 0);
    assertEquals(h.dispatcher.drops, { ...zeroDrops(), replayedHandshake: 4 });
    assertEquals(h.dispatcher.sessionCount, 1);
    assertEquals(h.dispatcher.handshakes, 1);

    // The session is unharmed and has not moved.
    await c.echo(new TextEncoder().encode("still here"));
    assertEquals(h.session(c).migrations, 0);
    assertEquals(h.session(c).addr.address, A);
    assertEquals(h.destinations(), [addrKey(A)]);
  } finally {
    await h.close();
  }
});

Deno.test("dispatcher: hellos more than 300 s off the server clock are dropped", async () => {
  const h = new Harness();
  try {
    let port = 41000;
    // 301 s behind and ahead, just outside, an hour off, and the unix epoch.
    for (const off of [-301_000, 301_000, -300_001, 300_001, -3_600_000, -WALL]) {
      const from = udp(port++);
      h.inject(h.hello(WALL + off).datagram, from);
      assertEquals(h.sentTo(from).length, 0, `no reply at offset ${off}`);
    }
    assertEquals(h.dispatcher.drops, { ...zeroDrops(), staleTimestamp: 6 });
    assertEquals(h.dispatcher.sessionCount, 0);
    assertEquals(h.dispatcher.handshakes, 0);
    assertEquals(h.sent.size, 0, "nothing sent at all");

    const accepted: Deno.NetAddr[] = [];
    for (const off of [-299_000, 299_000, -300_000, 300_000, 0]) {
      const from = udp(port++);
      h.inject(h.hello(WALL + off).datagram, from);
      assertEquals(h.sentTo(from).length, 1, `a reply at offset ${off}`);
      accepted.push(from);
    }
    assertEquals(h.dispatcher.sessionCount, 5);
    assertEquals(h.dispatcher.handshakes, 5);
    assertEquals(h.dispatcher.drops, { ...zeroDrops(), staleTimestamp: 6 });
    assertEquals(h.destinations(), accepted.map(addrKey).sort());

    // The window follows the injected clock: the same moment is stale an hour later.
    h.wall = WALL + 3_600_000;
    const late = udp(port++);
    h.inject(h.hello(WALL).datagram, late);
    assertEquals(h.sentTo(late).length, 0);
    assertEquals(h.dispatcher.drops.staleTimestamp, 7);
  } finally {
    await h.close();
  }
});

Deno.test("dispatcher: wrong key and random datagrams get no reply and never throw", async () => {
  const h = new Harness();
  try {
    const c = await h.connect(A);
    const s = h.session(c);
    const W = udp(42000, "198.51.100.99");

    // A genuine hello under another key.
    const other = deriveSecrets(generateAccessKey());
    h.inject(buildClientHello(other, new Masker(other.obfsKey), PARAMS, WALL).datagram, W);
    assertEquals(h.sentTo(W).length, 0);
    assertEquals(h.dispatcher.drops, { ...zeroDrops(), unauthenticated: 1 });

    // Random datagrams of every length, from a stranger and from the client's own address.
    // Synchronous loop: no client traffic can interleave, so any send would be a reply.
    const atA = h.sentTo(A).length;
    const failuresBefore = s.conn.session.stats.authFailures;
    for (let len = 0; len <= 1500; len++) {
      const d = randomBytes(len);
      h.inject(d, W);
      h.inject(d, A);
    }
    // Random bodies under the session's real (unmasked) id reach its Session and fail there.
    const m = new Uint8Array(4);
    let forged = 0;
    for (let len = MIN_PACKET_LENGTH; len <= 1500; len += 7) {
      const d = randomBytes(len);
      h.masker.mask(d, m, PACKET_HEADER_LENGTH);
      new DataView(d.buffer).setUint32(0, s.id);
      for (let i = 0; i < 4; i++) d[i] ^= m[i];
      h.inject(d, W);
      h.inject(d, A);
      forged += 2;
    }
    assertEquals(h.sentTo(W).length, 0, "no reply to the stranger");
    assertEquals(h.sentTo(A).length, atA, "no reply to noise from the client's address");
    assertEquals(h.dispatcher.drops, {
      ...zeroDrops(),
      unauthenticated: 1 + 2 * 1501 + forged,
    });
    assert(
      s.conn.session.stats.authFailures >= failuresBefore + forged,
      "forged packets were tried against the session and failed",
    );
    assertEquals(h.dispatcher.sessionCount, 1);
    assertEquals(h.dispatcher.handshakes, 1);
    assertEquals(s.migrations, 0);
    assertEquals(s.candidateCount, 0);

    await c.echo(new TextEncoder().encode("unharmed"));
    assertEquals(h.destinations(), [addrKey(A)]);
  } finally {
    await h.close();
  }
});

Deno.test("dispatcher: handshake trials are rate limited by the token bucket", async () => {
  const h = new Harness({ handshakeRate: 5, handshakeBurst: 5 });
  try {
    const hellos = Array.from({ length: 100 }, () => h.hello());
    const from = hellos.map((_, i) => udp(43000 + i));
    const t0 = performance.now();
    for (let i = 0; i < hellos.length; i++) h.inject(hellos[i].datagram, from[i]);
    const elapsed = performance.now() - t0;
    const n = h.dispatcher.handshakes;
    // The burst is 5; refill adds 5/s while the flood runs (a few ms).
    const allowed = 5 + Math.floor((elapsed / 1000) * 5);
    assert(n >= 5, `the burst is honoured (${n} accepted)`);
    assert(n <= allowed, `${n} sessions from a flood, at most ${allowed} allowed`);
    assertEquals(h.dispatcher.sessionCount, n);
    assertEquals(h.dispatcher.drops, { ...zeroDrops(), rateLimited: 100 - n });
    // Exactly one reply to each accepted client, none to anybody else.
    const acceptedAddrs = [...h.dispatcher.allSessions()].map((s) => addrKey(s.addr)).sort();
    assertEquals(h.destinations(), acceptedAddrs);
    for (const k of acceptedAddrs) assertEquals(h.sent.get(k)!.length, 1);
    for (let i = 0; i < 5; i++) assertEquals(h.sentTo(from[i]).length, 1, "first five accepted");

    // A refused hello was not remembered: once a token is back, its retry is accepted.
    await sleep(250);
    h.inject(hellos[99].datagram, from[99]);
    assertEquals(h.dispatcher.handshakes, n + 1);
    assertEquals(h.sentTo(from[99]).length, 1);
  } finally {
    await h.close();
  }
});

Deno.test("dispatcher: a full session table refuses new hellos silently", async () => {
  const h = new Harness({ maxSessions: 3 });
  try {
    const c1 = await h.connect(A);
    await h.connect(B);
    const third = h.hello(); // its client will not confirm (yet)
    h.inject(third.datagram, C);
    assertEquals(h.sentTo(C).length, 1);
    const hello = h.hello();
    h.inject(hello.datagram, D);
    h.inject(hello.datagram, D);
    assertEquals(h.sentTo(D).length, 0, "no reply when full");
    assertEquals(h.dispatcher.drops, { ...zeroDrops(), sessionCap: 2 });
    assertEquals(h.dispatcher.sessionCount, 3);
    assertEquals(h.dispatcher.handshakes, 3);
    // A full table still answers the repeated hello of a session it holds.
    h.inject(third.datagram, C);
    assertEquals(h.sentTo(C).length, 2);
    assertEquals(h.sentTo(C)[1], h.sentTo(C)[0]);
    assertEquals(h.dispatcher.drops, { ...zeroDrops(), sessionCap: 2 });
    assertEquals(h.destinations(), [A, B, C].map(addrKey).sort());

    // A slot frees: the refused client's next retry gets in.
    c1.conn.close(CloseCode.NORMAL, "bye");
    await waitUntil(() => h.dispatcher.sessionCount === 2, 1000, "slot freed");
    assertEquals(h.closed.length, 1);
    h.inject(hello.datagram, D);
    assertEquals(h.sentTo(D).length, 1);
    assertEquals(h.dispatcher.sessionCount, 3);
    assertEquals(h.dispatcher.drops, { ...zeroDrops(), sessionCap: 2 });
  } finally {
    await h.close();
  }
});

/** Re-encodes `hello` with another session id (same Noise message, valid under the key). */
function withSessionId(h: Harness, hello: ClientHello, sessionId: number): ClientHello {
  const dec = decodeHandshakeDatagram(h.masker, hello.datagram);
  assert(dec !== null);
  const datagram = encodeHandshakeDatagram(h.secrets, h.masker, sessionId, dec.noiseMsg.slice());
  return { ...hello, datagram, sessionId };
}

Deno.test("dispatcher: a hello reusing a live session id is dropped; the session is unharmed", async () => {
  const h = new Harness();
  try {
    const c = await h.connect(A);
    const st = await c.echo(new TextEncoder().encode("before"));
    const s = h.session(c);

    const forged = withSessionId(h, h.hello(), c.sessionId);
    h.inject(forged.datagram, B);
    assertEquals(h.sentTo(B).length, 0);
    const atA = h.sentTo(A).length;
    const other = withSessionId(h, h.hello(), c.sessionId);
    h.inject(other.datagram, A); // even from the owner's address
    assertEquals(h.sentTo(A).length, atA);
    assertEquals(h.dispatcher.drops, { ...zeroDrops(), idCollision: 2 });
    assertEquals(h.dispatcher.sessionCount, 1);
    assertEquals(h.dispatcher.handshakes, 1);
    assert(h.session(c) === s, "the same session object");
    assertEquals(s.addr.address, A);
    assertEquals(s.migrations, 0);
    await c.echo(new TextEncoder().encode("after"), st);
    assertEquals(h.destinations(), [addrKey(A)]);
  } finally {
    await h.close();
  }
});

Deno.test("dispatcher: a session id taken under another key is a collision too", async () => {
  const key2 = generateAccessKey();
  const h = new Harness();
  const h2 = new Harness({}, key2); // only used to build hellos under key 2
  const both = new Dispatcher({
    keys: [h.key, key2],
    maxSessions: 16,
    handshakeRate: 1000,
    handshakeBurst: 1000,
    replayWindowMs: 300_000,
    replayCacheSize: 1024,
    session: {},
    wallClock: () => WALL,
  });
  const sent: string[] = [];
  const peer = (addr: Deno.NetAddr): Peer => ({
    addr: udpEndpoint(addr),
    send: (_d, to) => sent.push(addrKey(to)),
  });
  try {
    const first = h.hello();
    both.handle(first.datagram, peer(A));
    assertEquals(sent, [addrKey(A)]);
    const forged = withSessionId(h2, h2.hello(), first.sessionId);
    both.handle(forged.datagram, peer(B));
    assertEquals(sent, [addrKey(A)]);
    assertEquals(both.drops, { ...zeroDrops(), idCollision: 1 });
    assertEquals([...both.allSessions()].map((s) => [s.id, s.keyIndex]), [[first.sessionId, 0]]);
  } finally {
    both.closeAll(CloseCode.SHUTDOWN, "test over");
    await h.close();
    await h2.close();
  }
});

Deno.test("dispatcher: roaming needs authenticated new-highest packets from the new address", async () => {
  const h = new Harness();
  try {
    const c = await h.connect(A);
    const st = await c.echo(new TextEncoder().encode("warm up"));
    const s = h.session(c);
    assertEquals(s.migrations, 0);
    await sleep(30); // let delayed acks settle
    const old = c.sentLog.slice(); // packets the server has received

    // 1. An attacker on the path holds back one genuine packet and replays it from C.
    c.hold = true;
    c.ping();
    c.hold = false;
    assertEquals(c.held.length, 1);
    const captured = c.held[0];
    h.inject(captured, C);
    assertEquals(s.candidateCount, 1, "C is only a candidate");
    assertEquals(s.migrations, 0);
    assertEquals(s.addr.address, A);
    // Later packets from the real address reset the candidate; replies keep going to A.
    await c.echo(new TextEncoder().encode("still at A"), st);
    assertEquals(s.candidateCount, 0);
    assertEquals(s.migrations, 0);
    assertEquals(s.addr.address, A);
    assertEquals(h.sentTo(C).length, 0, "nothing ever sent to the replayer");
    assertEquals(h.destinations(), [addrKey(A)]);

    // 2. Bit-flipped packets from a new address never move anything.
    await sleep(30);
    c.hold = true;
    c.ping();
    c.hold = false;
    const fresh = c.held[1];
    const unauthBefore = h.dispatcher.drops.unauthenticated;
    let flips = 0;
    for (const pos of [0, 3, 4, 11, 12, 20, 43, 44, fresh.length - 1]) {
      for (let rep = 0; rep < ROAM_CONFIRMATIONS + 1; rep++) {
        const bad = fresh.slice();
        bad[pos] ^= 1 << rep;
        h.inject(bad, D);
        flips++;
      }
    }
    assertEquals(h.dispatcher.drops.unauthenticated, unauthBefore + flips);
    assertEquals(s.candidateCount, 0);
    assertEquals(s.migrations, 0);
    assertEquals(s.addr.address, A);
    assertEquals(h.sentTo(D).length, 0);
    h.inject(fresh, A); // the genuine one still counts (it was never used)

    // 3. Replays of old packets, from anywhere, die in the anti-replay window.
    const replaysBefore = s.conn.session.stats.replays;
    const unauth2 = h.dispatcher.drops.unauthenticated;
    for (const p of old) {
      h.inject(p, E);
      h.inject(p, E);
      h.inject(p, A);
    }
    assertEquals(s.conn.session.stats.replays, replaysBefore + 3 * old.length);
    assertEquals(h.dispatcher.drops.unauthenticated, unauth2 + 3 * old.length);
    assertEquals(s.candidateCount, 0);
    assertEquals(s.migrations, 0);
    assertEquals(s.addr.address, A);
    assertEquals(h.sentTo(E).length, 0);

    // 4. The client really moves to B (NAT rebinding): two genuine packets move the session.
    await sleep(30);
    h.routes.delete(addrKey(A));
    c.addr = B;
    h.routes.set(addrKey(B), c);
    c.ping();
    await sleep(0);
    assertEquals(s.candidateCount, 1);
    assertEquals(s.migrations, 0, "one packet is not enough");
    assertEquals(s.addr.address, A);
    c.ping();
    await sleep(0);
    assertEquals(s.migrations, 1, `moved after ${ROAM_CONFIRMATIONS} packets`);
    assertEquals(s.addr.address, B);
    assertEquals(s.candidateCount, 0);
    const atA2 = h.sentTo(A).length;
    const atB = h.sentTo(B).length;
    await c.echo(new TextEncoder().encode("now from B"), st);
    await c.echo(randomBytes(20_000), st);
    assert(h.sentTo(B).length > atB, "replies go to B");
    assertEquals(h.sentTo(A).length, atA2, "nothing more to the old address");

    // 5. Old packets replayed from the old address or elsewhere do not move it back.
    for (const p of [...old, captured, fresh]) {
      h.inject(p, A);
      h.inject(p, C);
    }
    assertEquals(s.migrations, 1);
    assertEquals(s.addr.address, B);
    assertEquals(s.candidateCount, 0);
    assertEquals(h.sentTo(A).length, atA2);
    assertEquals(h.sentTo(C).length, 0);
    assertEquals(h.sentTo(D).length, 0);
    assertEquals(h.sentTo(E).length, 0);
    await c.echo(new TextEncoder().encode("done"), st);
    assertEquals(h.destinations(), [A, B].map(addrKey).sort());
    assertEquals(h.dispatcher.handshakes, 1);
    assertEquals(h.dispatcher.sessionCount, 1);
    const d = h.dispatcher.drops;
    assertEquals(
      { ...d, unauthenticated: 0 },
      zeroDrops(),
      "only 'unauthenticated' counts these",
    );
  } finally {
    await h.close();
  }
});

Deno.test("dispatcher: idle sessions are evicted", async () => {
  const h = new Harness({ session: { idleTimeout: 200 } });
  try {
    // One that never sent a packet after its hello, one that did and went quiet.
    const hello = h.hello();
    h.inject(hello.datagram, A);
    const quiet = await h.connect(B);
    await quiet.echo(new TextEncoder().encode("then silence"));
    assertEquals(h.dispatcher.sessionCount, 2);
    const t0 = performance.now();
    await waitUntil(() => h.dispatcher.sessionCount === 0, 3000, "idle eviction");
    const took = performance.now() - t0;
    assert(took < 1500, `evicted in ${Math.round(took)} ms`);
    assertEquals(h.closed.length, 2, "onSessionClosed fired for both");
    for (const { reason } of h.closed) assertEquals(reason, "idle timeout");
    assertEquals(
      h.closed.map(({ s }) => s.id).sort(),
      [hello.sessionId, quiet.sessionId].sort(),
    );
    assertEquals(h.dispatcher.drops, zeroDrops());
    // The replay cache outlives the session: its hello cannot start a new one.
    const atA = h.sentTo(A).length;
    h.inject(hello.datagram, A);
    assertEquals(h.sentTo(A).length, atA, "no reply to the evicted session's hello");
    assertEquals(h.dispatcher.drops, { ...zeroDrops(), replayedHandshake: 1 });
    assertEquals(h.dispatcher.sessionCount, 0);
    assertEquals(h.destinations(), [A, B].map(addrKey).sort());
  } finally {
    await h.close();
  }
});

Deno.test("dispatcher: recognizes() knows hellos and live sessions' packets, nothing else", async () => {
  const h = new Harness();
  try {
    const hello = h.hello();
    assert(h.dispatcher.recognizes(hello.datagram), "an authentic hello");
    assert(!h.dispatcher.recognizes(randomBytes(200)), "random bytes");
    assert(!h.dispatcher.recognizes(new Uint8Array(0)), "nothing");
    assert(!h.dispatcher.recognizes(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")), "HTTP");
    const other = deriveSecrets(generateAccessKey());
    assert(
      !h.dispatcher.recognizes(h.hello(h.wall, other, new Masker(other.obfsKey)).datagram),
      "a hello under a key the server does not have",
    );
    const c = await h.connect(A);
    c.hold = true;
    c.ping();
    assert(c.held.length > 0, "the client sent a packet");
    assert(h.dispatcher.recognizes(c.held[c.held.length - 1]), "a live session's packet");
    assertEquals(h.dispatcher.sessionCount, 1, "recognizing creates nothing");
  } finally {
    await h.close();
  }
});
