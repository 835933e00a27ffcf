/**
 * End to end: the access key kept off the command line. A server started
 * with `--key-file`, a client with `OSTP_LINK` in its environment and one
 * with `--key-file`; curl through each proxy, and the key must appear neither
 * in the client's output nor in any daemon's `/proc/PID/cmdline`. A client
 * given the link as an argument shows what the test guards against: the key
 * in its command line, and one warning saying so. Also: `deno task -q` does
 * not echo the command line.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  curl,
  type Daemon,
  freePort,
  spawnDeno,
  startClient,
  startOrigin,
} from "../support/daemons.ts";
import { formatAccessKey } from "../../shared/crypto/keys.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
/** The process's command line as `ps` shows it to every local user. */
async function cmdline(pid: number): Promise<string> {
  return (await Deno.readTextFile(`/proc/${pid}/cmdline`)).replaceAll("\0", " ");
}

Deno.test({
  name: "e2e: key from a key file and OSTP_LINK stays out of ps and the logs",
  ignore: Deno.build.os !== "linux",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const key = crypto.getRandomValues(new Uint8Array(32));
    const forms = [formatAccessKey(key, "hex"), formatAccessKey(key, "base64url")];
    const hidden = (text: string, what: string) => {
      for (const f of forms) assert(!text.includes(f), `the key is in ${what}:\n${text}`);
    };
    const dir = await Deno.makeTempDir({ prefix: "ostp-secrets-" });
    const keyFile = `${dir}/ostp.key`;
    await Deno.writeTextFile(keyFile, `# test key\n${forms[0]}\n`, { mode: 0o600 });
    await Deno.chmod(keyFile, 0o600);

    const origin = startOrigin();
    const port = freePort("udp");
    const daemons: Daemon[] = [];
    try {
      const server = spawnDeno("server", "server/main.ts", [
        "--listen",
        `127.0.0.1:${port}`,
        "--key-file",
        keyFile,
      ], {});
      daemons.push(server);
      const link = (await server.waitFor(/share link: (ostp:\/\/\S+)/))[1];
      hidden(await cmdline(server.pid), "the server's command line");
      assertEquals(server.count(/^warning:/), 0, server.output.join("\n"));

      const through = async (proxyPort: number, proxy: "socks5" | "http") => {
        const via = proxy === "socks5"
          ? ["--socks5-hostname", `127.0.0.1:${proxyPort}`]
          : ["-x", `http://127.0.0.1:${proxyPort}`];
        const r = await curl([...via, `http://127.0.0.1:${origin.port}/hello`]);
        assertEquals(r.code, 0, r.stderr);
        assertEquals(new TextDecoder().decode(r.stdout), "hello\n");
      };
      const startSafe = async (name: string, args: string[], env: Record<string, string>) => {
        const proxyPort = freePort("tcp");
        const c = spawnDeno(
          name,
          "client/main.ts",
          ["--listen", `127.0.0.1:${proxyPort}`, ...args],
          env,
        );
        daemons.push(c);
        await c.waitFor(/listening on/);
        await c.waitFor(/connected to/);
        return { daemon: c, proxyPort };
      };

      await t.step("client with OSTP_LINK in its environment", async () => {
        const c = await startSafe("client-env", [], { OSTP_LINK: link });
        await through(c.proxyPort, "socks5");
        await through(c.proxyPort, "http");
        hidden(await cmdline(c.daemon.pid), "the client's command line");
        hidden(c.daemon.output.join("\n"), "the client's output");
        assertEquals(c.daemon.count(/^warning:/), 0, c.daemon.output.join("\n"));
      });

      await t.step("client with --key-file", async () => {
        const c = await startSafe("client-file", [
          "--server",
          `127.0.0.1:${port}`,
          "--key-file",
          keyFile,
        ], {});
        await through(c.proxyPort, "socks5");
        hidden(await cmdline(c.daemon.pid), "the client's command line");
        hidden(c.daemon.output.join("\n"), "the client's output");
        assertEquals(c.daemon.count(/^warning:/), 0, c.daemon.output.join("\n"));
      });

      await t.step("a link argument is in ps, and the client warns once", async () => {
        const c = await startClient(link);
        daemons.push(c.daemon);
        await through(c.proxyPort, "socks5");
        assert((await cmdline(c.daemon.pid)).includes(forms[1]), "this check sees a key in ps");
        assertEquals(c.daemon.count(/^warning: the share link is on the command line/), 1);
        assertEquals(c.daemon.count(/OSTP_LINK/), 1, c.daemon.output.join("\n"));
        hidden(c.daemon.output.join("\n"), "the client's output");
      });

      await t.step("deno task echoes the command line; deno task -q does not", async () => {
        const task = async (pre: string[]) => {
          const out = await new Deno.Command(Deno.execPath(), {
            args: ["task", ...pre, "client", "--version"],
            cwd: ROOT,
            stdout: "piped",
            stderr: "piped",
            env: { NO_COLOR: "1" },
          }).output();
          assertEquals(out.code, 0);
          return new TextDecoder().decode(out.stderr);
        };
        assert((await task([])).includes("client/main.ts '--version'"), "the echo changed");
        assertEquals(await task(["-q"]), "");
        assertEquals(await task(["--quiet"]), "");
      });
    } finally {
      for (const d of daemons.reverse()) await d.stop();
      await origin.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
