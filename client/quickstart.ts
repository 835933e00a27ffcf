/**
 * `deno task quickstart`: the embedded default. Starts a server and a client on
 * loopback with a fresh key, proves the path by fetching a page through the
 * tunnel, prints the proxy address and the share link, and serves until Ctrl+C.
 * @module
 */

import { generateAccessKey } from "../shared/crypto/keys.ts";
import { clientConfigFromLink, encodeShareLink } from "../shared/link.ts";
import { setupLogging } from "../shared/log.ts";
import { parseServerConfig } from "../shared/config/server_config.ts";
import { formatAccessKey } from "../shared/crypto/keys.ts";
import { OstpServer } from "../server/server.ts";
import { OstpClient } from "./client.ts";
import { disableInspectorSignal } from "../ffi/inspector_signal.ts";

/**
 * What the quickstart's server lets clients reach beyond the egress policy's
 * default: loopback, where its demo page (and anything the user tries next on
 * this machine) lives. A deployed server refuses loopback (docs/egress.md).
 */
const QUICKSTART_EGRESS_ALLOW = ["127.0.0.0/8", "::1/128"];

/** Preferred proxy port; a free one is taken if it is busy. */
const PROXY_PORT = 1088;
const PAGE = "Hello from the far side of an ostp tunnel.\n";

function portFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

/** Fetches `url` through an HTTP proxy with an absolute-form request; returns the body. */
async function fetchViaProxy(proxy: Deno.NetAddr, url: URL): Promise<string> {
  const conn = await Deno.connect({ hostname: proxy.hostname, port: proxy.port });
  try {
    const req = `GET ${url.href} HTTP/1.1\r\nHost: ${url.host}\r\nConnection: close\r\n\r\n`;
    await conn.write(new TextEncoder().encode(req));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(16384);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const text = new TextDecoder().decode(
      chunks.reduce((a, c) => {
        const o = new Uint8Array(a.length + c.length);
        o.set(a);
        o.set(c, a.length);
        return o;
      }, new Uint8Array(0)),
    );
    const [head, body = ""] = text.split("\r\n\r\n", 2);
    if (!/^HTTP\/1\.1 200/.test(head)) throw new Error(`proxy answered: ${head.split("\r\n")[0]}`);
    return body;
  } finally {
    conn.close();
  }
}

/** Runs the quickstart until SIGINT/SIGTERM; resolves with the exit code. */
export async function quickstart(): Promise<number> {
  await setupLogging({ level: "warning", format: "text" });
  void disableInspectorSignal();
  const key = generateAccessKey();
  const server = new OstpServer(
    parseServerConfig({
      listen: ["127.0.0.1:0"],
      keys: [formatAccessKey(key, "hex")],
      egress: { allow: QUICKSTART_EGRESS_ALLOW },
    }),
  );
  server.start();
  const link = encodeShareLink({
    key,
    server: { host: "127.0.0.1", port: server.addresses[0].port },
    name: "quickstart",
  });
  const port = portFree(PROXY_PORT) ? PROXY_PORT : 0;
  const client = new OstpClient(
    clientConfigFromLink(
      (await import("../shared/link.ts")).decodeShareLink(link),
      { listen: { host: "127.0.0.1", port } },
    ),
  );
  await client.start();
  const page = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response(PAGE),
  );
  const pageUrl = new URL(`http://127.0.0.1:${page.addr.port}/`);
  const proxy = client.proxyAddress;
  const shutdown = async () => {
    await client.stop();
    await server.stop();
    await page.shutdown();
  };
  try {
    const body = await fetchViaProxy(proxy, pageUrl);
    if (body !== PAGE) throw new Error("the page came back altered");
  } catch (e) {
    console.error(`quickstart: the tunnel does not work: ${(e as Error).message}`);
    await shutdown();
    return 1;
  }
  const addr = `127.0.0.1:${proxy.port}`;
  console.log(`ostp quickstart: server udp 127.0.0.1:${server.addresses[0].port}, tunnel checked`);
  console.log(`  fetched ${pageUrl.href} through the tunnel: ok`);
  console.log(
    `  egress: this demo server allows loopback (${QUICKSTART_EGRESS_ALLOW.join(", ")}), where ` +
      "its page lives; a deployed server refuses loopback and private addresses unless " +
      'its config\'s "egress.allow" opens them (docs/egress.md)',
  );
  console.log(`  share link: ${link}`);
  console.log(`  try: curl -x socks5h://${addr} ${pageUrl.href}`);
  console.log(`proxy ready: socks5://${addr} and http://${addr} (Ctrl+C to stop)`);
  const { promise: done, resolve } = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGINT", resolve);
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", resolve);
  await done;
  await shutdown();
  console.log("stopped");
  return 0;
}

if (import.meta.main) Deno.exit(await quickstart());
