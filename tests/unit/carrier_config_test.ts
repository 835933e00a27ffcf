import { assertEquals, assertThrows } from "../support/assert.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";
import { ConfigError } from "../../shared/config/types.ts";
import { parseServerConfig } from "../../shared/config/server_config.ts";
import { parseClientConfig } from "../../shared/config/client_config.ts";
import { carrierOrder, parseFecSetting } from "../../shared/config/carrier_config.ts";

const KEY = formatAccessKey(generateAccessKey(), "hex");

function issuesOf(fn: () => unknown): string[] {
  const e = assertThrows(fn, ConfigError) as ConfigError;
  return e.issues.map((i) => `${i.path}: ${i.message}`);
}

Deno.test("carrier config: server blocks", () => {
  const c = parseServerConfig({
    keys: [KEY],
    faketcp: { listen: "0.0.0.0:8443", stateDir: "/tmp/x" },
    uot: { listen: "[::]:8444" },
    tls: { listen: "0.0.0.0:443", cert: "c.pem", key: "k.pem", fallback: "127.0.0.1:8080" },
    fec: { listen: "0.0.0.0:8445", mode: "10:3" },
  });
  assertEquals(c.carriers, {
    faketcp: { listen: { host: "0.0.0.0", port: 8443 }, stateDir: "/tmp/x" },
    uot: { listen: { host: "::", port: 8444 } },
    tls: {
      listen: { host: "0.0.0.0", port: 443 },
      cert: "c.pem",
      key: "k.pem",
      fallback: { host: "127.0.0.1", port: 8080 },
    },
    fec: { listen: { host: "0.0.0.0", port: 8445 }, mode: { data: 10, parity: 3 } },
  });
  assertEquals(parseServerConfig({ keys: [KEY] }).carriers, undefined);
  assertEquals(
    issuesOf(() =>
      parseServerConfig({
        keys: [KEY],
        faketcp: {},
        tls: { listen: "0.0.0.0:443" },
        fec: { listen: "0.0.0.0:1", mode: "3:9" },
      })
    ),
    [
      'faketcp.listen: required: "host:port", e.g. "0.0.0.0:8443"',
      'fec.mode: expected "off", "auto" or "data:parity" (data 1..64, parity ≤ data)',
      "tls.cert: required: the certificate chain's PEM file",
      "tls.key: required: the private key's PEM file",
    ],
  );
});

Deno.test("carrier config: client carrier, fallback order, ports, fec", () => {
  const base = { server: "h.example:8443", key: KEY };
  assertEquals(parseClientConfig(base).carriers, undefined);
  const c = parseClientConfig({
    ...base,
    carrier: "auto",
    fallback: ["faketcp", "tls", "udp"],
    faketcp: { port: 9000 },
    tls: { port: 8443, serverName: "www.example.com" },
    fec: "auto",
    fecPort: 8445,
  });
  assertEquals(carrierOrder(c.carriers!), ["faketcp", "tls", "udp"]);
  assertEquals(c.carriers!.faketcpPort, 9000);
  assertEquals(c.carriers!.tls, { port: 8443, serverName: "www.example.com" });
  assertEquals(c.carriers!.fec, "auto");
  assertEquals(carrierOrder(parseClientConfig({ ...base, carrier: "tls" }).carriers!), ["tls"]);
  assertEquals(
    issuesOf(() =>
      parseClientConfig({ ...base, carrier: "quic", fallback: ["udp", "udp", "x"], fec: "10:3" })
    ),
    [
      "carrier: expected one of udp, turn, faketcp, uot, tls, auto",
      'fallback[1]: "udp" listed twice',
      'fallback[2]: unknown carrier "x"',
      "fec: needs the server's FEC port: fecPort, or a share link with fecport=<port>",
    ],
  );
});

Deno.test("carrier config: fec settings", () => {
  assertEquals(parseFecSetting("off"), "off");
  assertEquals(parseFecSetting(" AUTO "), "auto");
  assertEquals(parseFecSetting("10:3"), { data: 10, parity: 3 });
  assertEquals(parseFecSetting("10:0"), { data: 10, parity: 0 });
  for (const bad of ["", "10", "0:1", "65:3", "3:4", "a:b", "10:3:1"]) {
    assertEquals(parseFecSetting(bad), null, bad);
  }
});
