/**
 * No root at run time: a copy of the deno binary with `setcap
 * cap_net_admin=eip`, run as nobody inside a namespace of the test's own,
 * may change the network itself, and — once `passNetAdminToChildren` raised
 * the capability into the ambient set — so may the `ip` it runs (without it,
 * `ip` gets "Operation not permitted": file capabilities are not inherited).
 */
import { assertEquals } from "../support/assert.ts";
import { canUseNetns, run } from "../support/netns.ts";
import { which } from "../support/sh.ts";

const enabled = await canUseNetns() && !!(await which("setcap")) && !!(await which("setpriv"));
if (!enabled) console.log("SKIPPED caps test: need root, ip netns, setcap, setpriv");

const dec = new TextDecoder();

Deno.test({
  name: "netns: with setcap cap_net_admin, the commands the journal runs get the capability too",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const ns = `ostpcap-${crypto.randomUUID().slice(0, 6)}`;
    const dir = await Deno.makeTempDir({ prefix: "ostp-caps-" });
    try {
      await Deno.chmod(dir, 0o755);
      await Deno.copyFile(Deno.execPath(), `${dir}/deno`);
      await run("setcap", "cap_net_admin=eip", `${dir}/deno`);
      for (const f of ["caps_linux.ts", "libc.ts"]) {
        await Deno.copyFile(new URL(`../../ffi/${f}`, import.meta.url), `${dir}/${f}`);
      }
      await Deno.writeTextFile(
        `${dir}/probe.ts`,
        `import { passNetAdminToChildren } from "./caps_linux.ts";
         const ip = async () => (await new Deno.Command("ip", { args: ["link", "set", "lo", "mtu", "1400"],
           stderr: "piped" }).output()).code;
         const before = await ip();
         const r = passNetAdminToChildren();
         console.log(JSON.stringify({ before, result: r, after: await ip() }));`,
      );
      await Deno.mkdir(`${dir}/cache`, { mode: 0o777 });
      await Deno.chmod(`${dir}/cache`, 0o777);
      await run("ip", "netns", "add", ns);
      const out = await new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          ns,
          "setpriv",
          "--reuid",
          "nobody",
          "--regid",
          "nogroup",
          "--clear-groups",
          `${dir}/deno`,
          "run",
          "--allow-ffi",
          "--allow-run",
          "--allow-env",
          "--allow-sys",
          `${dir}/probe.ts`,
        ],
        env: { DENO_DIR: `${dir}/cache`, HOME: dir, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = dec.decode(out.stdout).trim();
      assertEquals(out.code, 0, dec.decode(out.stderr));
      const r = JSON.parse(text);
      assertEquals(r.result, "raised", text);
      assertEquals(r.before !== 0, true, `ip without the ambient capability must fail: ${text}`);
      assertEquals(r.after, 0, `ip with it must succeed: ${text}`);
      const mtu = await run("ip", "-n", ns, "link", "show", "lo");
      assertEquals(/mtu 1400/.test(mtu), true, mtu);
    } finally {
      await run("ip", "netns", "del", ns).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
