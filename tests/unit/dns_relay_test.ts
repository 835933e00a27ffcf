import { assert, assertEquals } from "../support/assert.ts";
import { DnsRelay } from "../../client/dns/dns_relay.ts";
import { NameMap } from "../../client/dns/name_map.ts";
import { DirectOutbound } from "../../client/outbound/direct.ts";
import { BlockOutbound } from "../../client/outbound/block.ts";
import {
  buildQuery,
  isDnsError,
  parseResponse,
  Rcode,
  RecordType,
} from "../../shared/dns/message.ts";
import { which } from "../support/sh.ts";
import { freeUdpPort, startDnsmasq } from "../support/dnsmasq.ts";

Deno.test({
  name: "dns relay: answers from dnsmasq reach each asker with its own id; names remembered",
  ignore: !(await which("dnsmasq")),
  async fn() {
    const dnsmasq = startDnsmasq({
      records: ["--host-record=one.test,192.0.2.1", "--host-record=two.test,192.0.2.2"],
    });
    const port = dnsmasq.port;
    const outbound = new DirectOutbound();
    const names = new NameMap();
    const relay = new DnsRelay({
      upstream: { host: "127.0.0.1", port },
      outbound,
      names,
      timeoutMs: 300,
    });
    try {
      // Wait for dnsmasq: a query that finally gets a NOERROR.
      for (let i = 0; i < 50; i++) {
        const a = await relay.resolve(buildQuery(1, "one.test", RecordType.A));
        const r = a && parseResponse(a);
        if (r && !isDnsError(r) && r.rcode === Rcode.NOERROR) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      // Two applications pick the same id at once.
      const [a, b] = await Promise.all([
        relay.resolve(buildQuery(7, "one.test", RecordType.A)),
        relay.resolve(buildQuery(7, "two.test", RecordType.A)),
      ]);
      const ra = parseResponse(a!);
      const rb = parseResponse(b!);
      assert(!isDnsError(ra) && !isDnsError(rb));
      assertEquals([ra.id, rb.id], [7, 7]);
      assertEquals(ra.question?.name, "one.test");
      assertEquals([...ra.answers[0].address!], [192, 0, 2, 1]);
      assertEquals([...rb.answers[0].address!], [192, 0, 2, 2]);
      assertEquals(names.lookup(new Uint8Array([192, 0, 2, 2]), performance.now()), "two.test");
      assertEquals(await relay.resolve(new Uint8Array([1, 2, 3])), null, "not a query: dropped");
      assertEquals(relay.stats.malformed, 1);
    } finally {
      relay.close();
      outbound.close?.();
      await dnsmasq.stop();
    }
  },
});

Deno.test("dns relay: no answer in time, or a blocked outbound, gives SERVFAIL", async () => {
  const port = freeUdpPort(); // nobody listens
  const outbound = new DirectOutbound();
  const relay = new DnsRelay({
    upstream: { host: "127.0.0.1", port },
    outbound,
    names: new NameMap(),
    timeoutMs: 200,
  });
  const blocked = new DnsRelay({
    upstream: { host: "127.0.0.1", port },
    outbound: new BlockOutbound(),
    names: new NameMap(),
  });
  try {
    const t0 = performance.now();
    const r = parseResponse((await relay.resolve(buildQuery(9, "x.test", RecordType.AAAA)))!);
    assert(!isDnsError(r));
    assertEquals([r.id, r.rcode], [9, Rcode.SERVFAIL]);
    assert(performance.now() - t0 < 3000);
    const rb = parseResponse((await blocked.resolve(buildQuery(3, "x.test", RecordType.A)))!);
    assert(!isDnsError(rb));
    assertEquals([rb.id, rb.rcode], [3, Rcode.SERVFAIL]);
  } finally {
    relay.close();
    blocked.close();
    outbound.close?.();
  }
});
