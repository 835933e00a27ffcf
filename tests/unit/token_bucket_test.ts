import { udpEndpoint } from "../../shared/carrier/udp.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { TokenBucket } from "../../server/token_bucket.ts";
import { Dispatcher, KEY_TRIALS_PER_SECOND } from "../../server/dispatcher.ts";
import { deriveSecrets, generateAccessKey, Masker } from "../../shared/crypto/keys.ts";
import { buildClientHello } from "../../shared/session/handshake.ts";

Deno.test("token bucket: burst, refill at the rate, all-or-nothing takes", () => {
  let now = 0;
  const b = new TokenBucket(10, 5, () => now);
  for (let i = 0; i < 5; i++) assert(b.take(), `token ${i}`);
  assert(!b.take(), "empty after the burst");
  now += 100; // 1 token
  assert(b.take());
  assert(!b.take());
  now += 1000; // refills to the burst, not beyond
  assert(!b.take(6), "never more than the burst");
  assert(b.take(5));
  assert(!b.take(1));
});

Deno.test("dispatcher: with many keys, junk hellos are capped by the key-trial budget", () => {
  const keys = Array.from({ length: 1000 }, () => generateAccessKey());
  const d = new Dispatcher({
    keys,
    maxSessions: 10,
    handshakeRate: 1e9,
    handshakeBurst: 1e9,
    replayWindowMs: 300_000,
    replayCacheSize: 1024,
    session: {},
  });
  const wrong = deriveSecrets(generateAccessKey());
  const m = new Masker(wrong.obfsKey);
  const params = {
    maxData: 1 << 20,
    maxStreamData: 1 << 20,
    maxStreams: 10,
    maxDatagramSize: 1350,
  };
  const hello = buildClientHello(wrong, m, params, Date.now()).datagram;
  const sent: unknown[] = [];
  const peer = {
    addr: udpEndpoint({ transport: "udp", hostname: "127.0.0.1", port: 9 }),
    send: (x: unknown) => sent.push(x),
  };
  const n = (2 * KEY_TRIALS_PER_SECOND) / keys.length + 300; // well beyond the burst
  for (let i = 0; i < n; i++) d.handle(hello, peer);
  assert(
    d.drops.rateLimited >= 50,
    `junk beyond the budget is refused untried (${d.drops.rateLimited})`,
  );
  assertEquals(sent.length, 0, "nothing answered");
  assertEquals(d.handshakes, 0);
});
