/**
 * Handshake cost against the number of access keys (users): the server tries
 * each key's cached secrets (PROTOCOL.md A2), so the worst case is a hello
 * under the last key. In-process, fake network, CPU time per handshake.
 * Run alone with `deno run -A tests/bench/users.ts`, or from `deno task bench`.
 * @module
 */

import { udpEndpoint } from "../../shared/carrier/udp.ts";
import { Dispatcher, type Peer } from "../../server/dispatcher.ts";
import { deriveSecrets, generateAccessKey, Masker } from "../../shared/crypto/keys.ts";
import { buildClientHello } from "../../shared/session/handshake.ts";

const PARAMS = { maxData: 1 << 24, maxStreamData: 1 << 22, maxStreams: 100, maxDatagramSize: 1350 };

/** One row: keys configured, microseconds per accepted handshake (last key), per rejected junk hello. */
export interface UserCostRow {
  keys: number;
  usPerHandshake: number;
  usPerWrongKeyHello: number;
}

/** Measures handshake cost for each key count. */
export function benchUsers(counts = [1, 10, 100, 1000], hellos = 200): UserCostRow[] {
  const rows: UserCostRow[] = [];
  for (const n of counts) {
    const keys = Array.from({ length: n }, () => generateAccessKey());
    const d = new Dispatcher({
      keys,
      maxSessions: 1 << 20,
      handshakeRate: 1e9,
      handshakeBurst: 1e9,
      keyTrialsPerSecond: 1e12, // measure the cost, not the budget
      replayWindowMs: 300_000,
      replayCacheSize: 1 << 20,
      session: { idleTimeout: 600_000 },
    });
    const last = deriveSecrets(keys[n - 1]);
    const masker = new Masker(last.obfsKey);
    const wrong = deriveSecrets(generateAccessKey());
    const wrongMasker = new Masker(wrong.obfsKey);
    const good = Array.from(
      { length: hellos },
      () => buildClientHello(last, masker, PARAMS, Date.now()).datagram,
    );
    const bad = Array.from(
      { length: hellos },
      () => buildClientHello(wrong, wrongMasker, PARAMS, Date.now()).datagram,
    );
    let port = 10000;
    const peer: Peer = {
      addr: udpEndpoint({ transport: "udp", hostname: "127.0.0.1", port }),
      send: () => {},
    };
    const t0 = performance.now();
    for (const g of good) {
      peer.addr = udpEndpoint({ transport: "udp", hostname: "127.0.0.1", port: port++ });
      d.handle(g, peer);
    }
    const t1 = performance.now();
    for (const b of bad) {
      peer.addr = udpEndpoint({ transport: "udp", hostname: "127.0.0.1", port: port++ });
      d.handle(b, peer);
    }
    const t2 = performance.now();
    if (d.handshakes !== hellos) {
      throw new Error(`expected ${hellos} handshakes, got ${d.handshakes}`);
    }
    d.closeAll(0, "bench done");
    rows.push({
      keys: n,
      usPerHandshake: ((t1 - t0) * 1000) / hellos,
      usPerWrongKeyHello: ((t2 - t1) * 1000) / hellos,
    });
  }
  return rows;
}

if (import.meta.main) {
  benchUsers([1, 10], 50); // warm the JIT
  for (const r of benchUsers()) {
    console.log(
      `${String(r.keys).padStart(5)} keys: ${
        r.usPerHandshake.toFixed(0).padStart(6)
      } µs per handshake (last key), ` +
        `${r.usPerWrongKeyHello.toFixed(0).padStart(6)} µs per wrong-key hello`,
    );
  }
  Deno.exit(0);
}
