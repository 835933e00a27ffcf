/**
 * The STUN mapping monitor on a session's UDP link, on loopback with a
 * scripted STUN server: the first mapping, a rebinding when the answer
 * changes, forged answers (wrong source, wrong transaction id) ignored, and
 * the session's own datagrams untouched on the shared socket.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { type MappingObservation, StunUdpDialer } from "../../shared/carrier/stun_udp.ts";
import { UdpDialer } from "../../shared/carrier/udp.ts";
import { DenoUdpSocket } from "../../shared/net/datagram.ts";
import { Attr, Method, parseStun, StunWriter } from "../../shared/stun/message.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A STUN server answering every Binding with `mapped()`; keeps the last request's id. */
function stunServer(mapped: () => Deno.NetAddr) {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const state = { lastTid: null as Uint8Array | null, lastFrom: null as Deno.NetAddr | null, n: 0 };
  const loop = (async () => {
    for await (const [data, from] of sock) {
      const m = parseStun(data);
      if (!m || m.method !== Method.binding || m.cls !== "request") continue;
      state.lastTid = m.tid.slice();
      state.lastFrom = from as Deno.NetAddr;
      state.n++;
      const answer = new StunWriter(Method.binding, "success", m.tid)
        .address(Attr.xorMappedAddress, mapped(), true).finish({ fingerprint: true });
      await sock.send(answer, from);
    }
  })().catch(() => {});
  return { sock, state, addr: sock.addr as Deno.NetAddr, loop };
}

Deno.test("stun monitor: first mapping, rebinding, forgeries ignored, session data untouched", async () => {
  let port = 40000;
  const stun = stunServer(() => ({ transport: "udp", hostname: "203.0.113.9", port }));
  // The "ostp server": an echo of what the link sends.
  const peer = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const forger = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const seen: MappingObservation[] = [];
  const dialer = new StunUdpDialer(new UdpDialer((h, p) => new DenoUdpSocket(h, p)), {
    servers: () => Promise.resolve([stun.addr]),
    intervalMs: 150,
    onObservation: (o) => seen.push(o),
    retransmit: { rtoMs: 100, maxSends: 3, lastWaitRtos: 2 },
  });
  const link = dialer.openNow(peer.addr as Deno.NetAddr);
  const got: string[] = [];
  const running = link.run((d) => got.push(new TextDecoder().decode(d)));
  try {
    for (let i = 0; i < 50 && seen.length === 0; i++) await sleep(20);
    assertEquals(seen[0]?.change, "first");
    assertEquals(seen[0].mapped, { transport: "udp", hostname: "203.0.113.9", port: 40000 });
    assertEquals(seen[0].localPort, link.localPort);
    assertEquals(stun.state.lastFrom?.port, link.localPort, "asked from the session's socket");
    assertEquals(link.stats()?.mapped, "203.0.113.9:40000");
    // Forged answers with the right transaction id from another address, and a wrong id from
    // the server's address: both dropped.
    const wait = stun.state.n;
    for (let i = 0; i < 50 && stun.state.n === wait; i++) await sleep(10);
    const tid = stun.state.lastTid!;
    const forged = new StunWriter(Method.binding, "success", tid)
      .address(Attr.xorMappedAddress, { transport: "udp", hostname: "6.6.6.6", port: 6 }, true)
      .finish();
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: link.localPort };
    await forger.send(forged, to);
    const wrongTid = new StunWriter(Method.binding, "success", new Uint8Array(12).fill(9))
      .address(Attr.xorMappedAddress, { transport: "udp", hostname: "6.6.6.6", port: 6 }, true)
      .finish();
    await stun.sock.send(wrongTid, to);
    await sleep(100);
    assert(dialer.dropped >= 2, `dropped ${dialer.dropped}`);
    assert(seen.every((o) => o.mapped.hostname !== "6.6.6.6"), "no forged mapping taken");
    // The session's datagrams still flow both ways on the same socket.
    link.send(new TextEncoder().encode("ping"));
    link.flush();
    const [d, from] = await peer.receive();
    assertEquals(new TextDecoder().decode(d), "ping");
    await peer.send(new TextEncoder().encode("pong"), from);
    for (let i = 0; i < 50 && got.length === 0; i++) await sleep(10);
    assertEquals(got, ["pong"]);
    // The NAT moves the mapping: the next check reports a rebinding.
    port = 40001;
    for (let i = 0; i < 100 && !seen.some((o) => o.change === "rebinding"); i++) await sleep(20);
    const r = seen.find((o) => o.change === "rebinding");
    assert(r, JSON.stringify(seen));
    assertEquals(r.previous?.port, 40000);
    assertEquals(r.mapped.port, 40001);
  } finally {
    link.close();
    await running;
    assertEquals(dialer.mappings.size, 0, "a closed link's mapping is forgotten");
    stun.sock.close();
    peer.close();
    forger.close();
    await stun.loop;
  }
});

Deno.test("stun monitor: a server that never answers is reported, the next one asked", async () => {
  const dead = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const stun = stunServer(() => ({ transport: "udp", hostname: "203.0.113.1", port: 1 }));
  const peer = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const seen: MappingObservation[] = [];
  const dialer = new StunUdpDialer(new UdpDialer((h, p) => new DenoUdpSocket(h, p)), {
    servers: () => Promise.resolve([dead.addr as Deno.NetAddr, stun.addr]),
    intervalMs: 0,
    onObservation: (o) => seen.push(o),
    retransmit: { rtoMs: 50, maxSends: 2, lastWaitRtos: 1 },
  });
  const link = dialer.openNow(peer.addr as Deno.NetAddr);
  const running = link.run(() => {});
  try {
    for (let i = 0; i < 100 && seen.length === 0; i++) await sleep(20);
    assertEquals(seen.length, 1);
    assertEquals(seen[0].server.port, stun.addr.port, "the second server answered");
  } finally {
    link.close();
    await running;
    dead.close();
    stun.sock.close();
    peer.close();
    await stun.loop;
  }
});
