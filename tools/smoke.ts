/**
 * The release smoke test (the quickstart's check, on any OS): starts a
 * server and a client on loopback — compiled binaries given with `--server`
 * and `--client`, or the sources through `deno run` — fetches 4 MiB from a
 * local origin through the client's HTTP proxy, compares its SHA-256, and
 * stops both. Exits 0 and prints "smoke: ok" when it worked.
 *
 *   deno run -A tools/smoke.ts [--server dist/ostp-server-linux-x64 --client dist/ostp-client-linux-x64]
 * @module
 */

const ROOT = new URL("../", import.meta.url);
const SIZE = 4 * 1024 * 1024;

function arg(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

function command(bin: string | undefined, entry: string): [string, string[]] {
  if (bin) return [bin, []];
  return [Deno.execPath(), ["run", "-A", "--unstable-net", new URL(entry, ROOT).pathname]];
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
}

/** Resolves with the first output line matching `re` (stdout or stderr), or rejects after `ms`. */
function waitLine(p: Deno.ChildProcess, re: RegExp, ms: number, seen: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error(`no line matching ${re}:\n${seen.join("\n")}`)),
      ms,
    );
    for (const s of [p.stdout, p.stderr]) {
      (async () => {
        let buf = "";
        for await (const chunk of s.pipeThrough(new TextDecoderStream())) {
          buf += chunk;
          let i;
          while ((i = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            seen.push(line);
            const m = line.match(re);
            if (m) {
              clearTimeout(t);
              resolve(m[1] ?? line);
            }
          }
        }
      })().catch(() => {});
    }
  });
}

async function sha256(b: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>));
  return Array.from(d, (x) => x.toString(16).padStart(2, "0")).join("");
}

const body = crypto.getRandomValues(new Uint8Array(65536));
const payload = new Uint8Array(SIZE);
for (let i = 0; i < SIZE; i += body.length) {
  payload.set(body.subarray(0, Math.min(body.length, SIZE - i)), i);
}
const origin = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen: () => {} },
  () => new Response(payload as Uint8Array<ArrayBuffer>),
);
const key = Array.from(
  crypto.getRandomValues(new Uint8Array(32)),
  (b) => b.toString(16).padStart(2, "0"),
)
  .join("");
const serverPort = freePort();
const proxyPort = freePort();
const [scmd, sargs] = command(arg("--server"), "server/main.ts");
const [ccmd, cargs] = command(arg("--client"), "client/main.ts");
const env = { OSTP_KEY: key };
const out: string[] = [];
let server: Deno.ChildProcess | null = null;
let client: Deno.ChildProcess | null = null;
let ok = false;
try {
  const version = await new Deno.Command(ccmd, { args: [...cargs, "--version"] }).output();
  console.log(`smoke: ${new TextDecoder().decode(version.stdout).trim()}`);
  server = new Deno.Command(scmd, {
    args: [
      ...sargs,
      "-l",
      `127.0.0.1:${serverPort}`,
      "--egress-allow",
      "127.0.0.0/8",
      "--workers",
      "1",
      "--print-links",
      "--no-control",
    ],
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const link = await waitLine(server, /share link: (ostp:\/\/\S+)/, 30_000, out);
  client = new Deno.Command(ccmd, {
    args: [...cargs, "-l", `127.0.0.1:${proxyPort}`, "--no-control"],
    env: { OSTP_LINK: link },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await waitLine(client, /(connected to)/, 30_000, out);
  const http = Deno.createHttpClient({ proxy: { url: `http://127.0.0.1:${proxyPort}` } });
  const res = await fetch(`http://127.0.0.1:${origin.addr.port}/bytes`, { client: http });
  const got = new Uint8Array(await res.arrayBuffer());
  http.close();
  if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
  if (await sha256(got) !== await sha256(payload)) throw new Error("the bytes differ");
  ok = true;
  console.log(`smoke: ok (${SIZE} bytes through the proxy, SHA-256 equal)`);
} catch (e) {
  console.error(`smoke: FAILED: ${(e as Error).message}`);
  console.error(out.join("\n"));
} finally {
  for (const p of [client, server]) {
    try {
      p?.kill("SIGTERM");
    } catch {
      // gone
    }
    await p?.status;
  }
  await origin.shutdown();
}
Deno.exit(ok ? 0 : 1);
