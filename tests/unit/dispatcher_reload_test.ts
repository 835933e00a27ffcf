import { udpEndpoint } from "../../shared/carrier/udp.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { Dispatcher, type Peer } from "../../server/dispatcher.ts";
import { deriveSecrets, generateAccessKey, Masker } from "../../shared/crypto/keys.ts";
import { buildClientHello } from "../../shared/session/handshake.ts";

const PARAMS = { maxData: 1 << 20, maxStreamData: 1 << 20, maxStreams: 10, maxDatagramSize: 1350 };

function hello(key: Uint8Array): Uint8Array {
  const s = deriveSecrets(key);
  return buildClientHello(s, new Masker(s.obfsKey), PARAMS, Date.now()).datagram;
}

Deno.test("dispatcher: updateKeys keeps sessions of remaining keys and closes the others", async () => {
  const a = generateAccessKey();
  const b = generateAccessKey();
  const c = generateAccessKey();
  const d = new Dispatcher({
    keys: [a, b],
    maxSessions: 10,
    handshakeRate: 1000,
    handshakeBurst: 1000,
    replayWindowMs: 300_000,
    replayCacheSize: 1024,
    session: {},
  });
  const closed: string[] = [];
  d.onSessionClosed = (_s, reason) => closed.push(reason);
  let port = 1000;
  const peer = (): Peer => ({
    addr: udpEndpoint({ transport: "udp", hostname: "127.0.0.1", port: port++ }),
    send: () => {},
  });
  d.handle(hello(a), peer());
  d.handle(hello(b), peer());
  assertEquals(d.sessionCount, 2);
  // Reload: b removed, c added, a kept (now at another index).
  assertEquals(d.updateKeys([c, a], 5, "access revoked"), 1);
  await new Promise((r) => setTimeout(r, 0));
  assertEquals(d.sessionCount, 1, "b's session closed");
  assertEquals(closed, ["access revoked"]);
  const [kept] = [...d.allSessions()];
  assertEquals(kept.keyIndex, 1, "a's session follows its key to its new index");
  d.handle(hello(b), peer());
  assertEquals(d.sessionCount, 1, "b is refused now");
  d.handle(hello(c), peer());
  assertEquals(d.sessionCount, 2, "c is accepted");
  assert(d.keyCount === 2);
  d.closeAll(0, "done");
  await new Promise((r) => setTimeout(r, 0));
});
