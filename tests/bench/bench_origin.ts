/**
 * The benches' origin as a process (network namespaces):
 *   deno run -A tests/bench/bench_origin.ts <host> <port>
 *
 * `/bytes/<n>?seed=s`: the same deterministic payload as the tests' origin
 * (`payload()` in tests/support/daemons.ts, cached per size and seed);
 * `/sink` (any method): reads the request body to the end without keeping it
 * and answers its length, so uploads of hundreds of MiB cost the origin no
 * memory and no hashing; `/hello`: a short text. Prints "ready" when listening.
 * @module
 */

import { payload } from "../support/daemons.ts";

const [host = "0.0.0.0", port = "8080"] = Deno.args;
const cache = new Map<string, Uint8Array>();

Deno.serve(
  { hostname: host, port: Number(port), onListen: () => console.log("ready") },
  async (req) => {
    const url = new URL(req.url);
    const m = url.pathname.match(/^\/bytes\/(\d+)$/);
    if (m) {
      const seed = Number(url.searchParams.get("seed") ?? 1);
      const key = `${m[1]}:${seed}`;
      let body = cache.get(key);
      if (!body) cache.set(key, body = payload(Number(m[1]), seed));
      return new Response(body as Uint8Array<ArrayBuffer>);
    }
    if (url.pathname === "/sink") {
      let n = 0;
      if (req.body) { for await (const chunk of req.body) n += chunk.length; }
      return new Response(`${n}\n`);
    }
    if (url.pathname === "/hello") return new Response("hello\n");
    return new Response("not found", { status: 404 });
  },
);
