/**
 * Mapping specs (`MODE^[ip:]port^[ip:]port`), the mapping wire formats, the
 * port sets of `allowInPorts`, and the client/server config fields.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  MappingError,
  parseMapping,
  parseMappingList,
} from "../../shared/config/mapping_config.ts";
import { parsePortSet, PortSet } from "../../shared/config/port_set.ts";
import {
  encodeInStreamHeader,
  encodeMapDatagram,
  encodeMapRequest,
  encodeMapResponse,
  parseMapDatagram,
  parseMapRequest,
  parseMapResponse,
  readInStreamHeader,
} from "../../shared/wire/mapping.ts";
import { parseClientConfig } from "../../shared/config/client_config.ts";
import { parseServerConfig } from "../../shared/config/server_config.ts";
import { ConfigError } from "../../shared/config/types.ts";

function err(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof MappingError || e instanceof ConfigError) return e.message;
    throw e;
  }
  return "";
}

Deno.test("mapping specs: OUT and IN, bare ports, ANY, IPv6, and what is refused", () => {
  assertEquals(parseMapping("OUT^8080^db.internal:5432", "tcp", 1), {
    id: 1,
    proto: "tcp",
    mode: "OUT",
    local: { host: "127.0.0.1", port: 8080 },
    remote: { host: "db.internal", port: 5432 },
    spec: "OUT^8080^db.internal:5432",
  });
  assertEquals(parseMapping("out^0.0.0.0:53^ANY", "udp", 2).remote, "ANY");
  assertEquals(parseMapping("IN^[::1]:22^2222", "tcp", 3).remote, {
    host: "127.0.0.1",
    port: 2222,
  });
  assertEquals(parseMapping("IN^22^[::]:2222", "tcp", 3).remote, { host: "::", port: 2222 });
  assertEquals(parseMappingList("OUT^1^2, IN^3^4,", "tcp").map((m) => m.id), [1, 2]);
  assert(/expected MODE/.test(err(() => parseMapping("OUT^1", "tcp", 1))));
  assert(/OUT or IN/.test(err(() => parseMapping("UP^1^2", "tcp", 1))));
  assert(/port must be from 1/.test(err(() => parseMapping("OUT^70000^1", "tcp", 1))));
  assert(/loopback or an unspecified/.test(err(() => parseMapping("IN^1^192.0.2.1:80", "tcp", 1))));
  assert(/target/.test(err(() => parseMapping("OUT^1^a:b:c", "tcp", 1))));
});

Deno.test("port sets: numbers, ranges, merging, bad entries named", () => {
  const issues: { path: string; message: string }[] = [];
  const s = parsePortSet([18080, "20000-20100", "20050-20200", "x", 0], "allowInPorts", issues);
  assert(s.has(18080) && s.has(20000) && s.has(20200) && !s.has(20201) && !s.has(18081));
  assertEquals(s.toJSON(), [18080, "20000-20200"]);
  assertEquals(issues.map((i) => i.path), ["allowInPorts[3]", "allowInPorts[4]"]);
  assert(PortSet.EMPTY.union(PortSet.of([[5, 5]])).has(5));
});

Deno.test("mapping wire: control lines, the IN stream header, kind-3 datagrams", async () => {
  const req = encodeMapRequest([{ id: 1, proto: "tcp", listen: "127.0.0.1:1" }]);
  assertEquals(parseMapRequest(new TextDecoder().decode(req).trim()), [
    { id: 1, proto: "tcp", listen: "127.0.0.1:1" },
  ]);
  assertEquals(parseMapRequest("{}"), "not a version 1 request");
  assertEquals(
    parseMapRequest('{"v":1,"in":[{"id":1,"proto":"sctp","listen":"x"}]}'),
    'proto must be "tcp" or "udp"',
  );
  assertEquals(
    parseMapRequest(
      '{"v":1,"in":[{"id":1,"proto":"tcp","listen":"a"},{"id":1,"proto":"udp","listen":"b"}]}',
    ),
    "bad or repeated mapping id",
  );
  assertEquals(parseMapRequest("not json"), "not JSON");
  const resp = encodeMapResponse({
    upstream: { tcp: true, udp: false },
    in: [{ id: 1, ok: true, bound: "127.0.0.1:1" }, { id: 2, ok: false, reason: "no" }],
  });
  assertEquals(parseMapResponse(new TextDecoder().decode(resp).trim()), {
    upstream: { tcp: true, udp: false },
    in: [{ id: 1, ok: true, bound: "127.0.0.1:1" }, { id: 2, ok: false, reason: "no" }],
  });
  for (const src of [{ host: "192.0.2.1", port: 4000 }, { host: "2001:db8::1", port: 1 }]) {
    const h = encodeInStreamHeader(7, src);
    let off = 0;
    const got = await readInStreamHeader((n) => {
      const out = h.slice(off, off + n);
      off += n;
      return Promise.resolve(out.length === n ? out : null);
    });
    assertEquals(got, { id: 7, source: src });
  }
  const bad = await readInStreamHeader(() => Promise.resolve(new Uint8Array([9, 0, 0, 0, 1, 1])));
  assertEquals(bad, "unknown stream kind 9");
  const d = encodeMapDatagram(3, 99, new Uint8Array([1, 2, 3]));
  assertEquals(parseMapDatagram(d), { id: 3, flow: 99, payload: new Uint8Array([1, 2, 3]) });
  assertEquals(parseMapDatagram(d.subarray(0, 8)), null);
});

const KEY = "11".repeat(32);

Deno.test("client config: mappings, proxy off, heartbeats, hop interval", () => {
  const c = parseClientConfig({
    server: "192.0.2.1:1",
    key: KEY,
    proxy: false,
    mappings: { tcp: ["OUT^8080^10.0.0.5:80", "IN^22^2222"], udp: "OUT^5353^ANY" },
    heartbeatInterval: 0,
    heartbeatTimeout: 0,
    hopInterval: 5,
  });
  assertEquals(c.mappings.map((m) => `${m.proto}:${m.spec}:${m.id}`), [
    "tcp:OUT^8080^10.0.0.5:80:1",
    "tcp:IN^22^2222:2",
    "udp:OUT^5353^ANY:3",
  ]);
  assertEquals([c.proxy, c.keepalive, c.idleTimeout, c.hopInterval], [false, 0, 0, 5]);
  assert(
    /with the proxy off, give at least one mapping/.test(
      err(() => parseClientConfig({ server: "192.0.2.1:1", key: KEY, proxy: false })),
    ),
  );
  assert(
    /hopInterval: must be 0 \(off\) or at least 5 seconds/.test(
      err(() => parseClientConfig({ server: "192.0.2.1:1", key: KEY, hopInterval: 2 })),
    ),
  );
  assert(
    /mappings.tcp\[0\]/.test(
      err(() =>
        parseClientConfig({ server: "192.0.2.1:1", key: KEY, mappings: { tcp: ["OUT^x^y"] } })
      ),
    ),
  );
  assert(
    /give keepalive or heartbeatInterval/.test(
      err(() =>
        parseClientConfig({ server: "192.0.2.1:1", key: KEY, keepalive: 5, heartbeatInterval: 5 })
      ),
    ),
  );
});

Deno.test("server config: tcpUpstream, udpUpstream (an address), allowInPorts per server and user", () => {
  const s = parseServerConfig({
    keys: [KEY],
    tcpUpstream: "db.internal:5432",
    udpUpstream: "10.0.0.53:53",
    allowInPorts: [18080, "20000-20010"],
    users: [{ name: "alice", key: "22".repeat(32), allowInPorts: ["30000"] }],
  });
  assertEquals(s.tcpUpstream, { host: "db.internal", port: 5432 });
  assertEquals(s.udpUpstream, { host: "10.0.0.53", port: 53 });
  assertEquals(s.allowInPorts, [[18080, 18080], [20000, 20010]]);
  assertEquals(s.users[0].allowInPorts, [[30000, 30000]]);
  assert(
    /udpUpstream: must be an IP address/.test(
      err(() => parseServerConfig({ keys: [KEY], udpUpstream: "dns.internal:53" })),
    ),
  );
  assert(
    /allowInPorts\[0\]/.test(err(() => parseServerConfig({ keys: [KEY], allowInPorts: ["a-b"] }))),
  );
});
