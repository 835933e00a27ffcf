/**
 * Opens many real sessions against a server from a few UDP sockets: for the
 * idle-session test and the memory-per-session benchmark.
 * @module
 */

import { deriveSecrets, Masker } from "../../shared/crypto/keys.ts";
import {
  buildClientHello,
  type ClientHello,
  readServerHello,
} from "../../shared/session/handshake.ts";
import { decodeHandshakeDatagram } from "../../shared/wire/handshake.ts";

const PARAMS = { maxData: 1 << 24, maxStreamData: 1 << 22, maxStreams: 100, maxDatagramSize: 1350 };

/** Result of {@link openSessions}. */
export interface LoadResult {
  /** Hellos sent. */
  sent: number;
  /** Valid server answers received. */
  answered: number;
}

/**
 * Sends `count` distinct authentic hellos to `port` on 127.0.0.1, spread over
 * `sockets` source sockets, paced at `perSecond`, and counts valid answers
 * until `settleMs` after the last one.
 */
export async function openSessions(
  key: Uint8Array,
  port: number,
  count: number,
  opts: { sockets?: number; perSecond?: number; settleMs?: number } = {},
): Promise<LoadResult> {
  const secrets = deriveSecrets(key);
  const masker = new Masker(secrets.obfsKey);
  const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port };
  const socks = Array.from(
    { length: opts.sockets ?? 10 },
    () => Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 }),
  );
  const pending = new Map<number, ClientHello>();
  const origin = new Map<number, Deno.DatagramConn>();
  let answered = 0;
  const loops = socks.map(async (s) => {
    try {
      for (;;) {
        const [d] = await s.receive();
        const id = decodeHandshakeDatagram(masker, d)?.sessionId;
        const hello = id === undefined ? undefined : pending.get(id);
        if (hello && readServerHello(hello, masker, d)) {
          pending.delete(hello.sessionId);
          answered++;
        }
      }
    } catch {
      // closed
    }
  });
  const gap = 1000 / (opts.perSecond ?? 500);
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const hello = buildClientHello(secrets, masker, PARAMS, Date.now());
    pending.set(hello.sessionId, hello);
    origin.set(hello.sessionId, socks[i % socks.length]);
    await socks[i % socks.length].send(hello.datagram, to);
    const ahead = t0 + (i + 1) * gap - performance.now();
    if (ahead > 0) await new Promise((r) => setTimeout(r, ahead));
  }
  // Like real clients, repeat the hellos that got no answer (the server answers
  // a repeated hello from the same address with the same reply).
  for (let round = 0; round < 3 && pending.size > 0; round++) {
    await new Promise((r) => setTimeout(r, opts.settleMs ?? 1000));
    for (const [id, hello] of pending) {
      await origin.get(id)!.send(hello.datagram, to);
      await new Promise((r) => setTimeout(r, gap));
    }
  }
  await new Promise((r) => setTimeout(r, opts.settleMs ?? 1000));
  for (const s of socks) s.close();
  await Promise.all(loops);
  return { sent: count, answered };
}
