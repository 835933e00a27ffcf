import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { parseVpnArgs, type VpnOptions } from "../../client/vpn/vpn_cli.ts";
import { nameserversOf, nextHost, vpnPlan } from "../../client/vpn/vpn_mode.ts";

const noEnv = (_name: string): string | undefined => undefined;
const files = (m: Record<string, string>) => (p: string) =>
  p in m ? Promise.resolve(m[p]) : Promise.reject(new Error(`${p}: not found`));

async function up(argv: string[], env = noEnv, read = files({})): Promise<VpnOptions> {
  const r = await parseVpnArgs(argv, "ostp-client", env, read);
  if (r.kind !== "vpn-up") throw new Error(`expected vpn-up, got ${JSON.stringify(r)}`);
  return r.options;
}

Deno.test("vpn cli: the issue's two forms, up being the default action", async () => {
  const a = await up(["--proxy-url", "http://alice:secret@192.0.2.10:8080"]);
  assertEquals(a.proxy, {
    secure: false,
    host: "192.0.2.10",
    port: 8080,
    credentials: { username: "alice", password: "secret" },
  });
  assertEquals(a.proxyIps, ["192.0.2.10"]);
  assertEquals([a.killSwitch, a.stateDir, a.tunName], [true, "/run/ostp", "ostp0"]);
  const b = await up(
    [
      "up",
      "--proxy-host",
      "proxy.example.com",
      "--proxy-port",
      "3128",
      "--username",
      "alice",
      "--password-file",
      "/s",
      "--tun-name",
      "tun0",
      "--tun-cidr",
      "10.255.255.1/30",
      "--proxy-ip",
      "192.0.2.1",
      "--proxy-ip",
      "2001:db8::1",
      "--dns",
      "192.0.2.53",
      "--allow-dns",
      "192.0.2.54",
      "--no-killswitch",
      "--dry-run",
    ],
    noEnv,
    files({ "/s": "pa:ss\n" }),
  );
  assertEquals(b.proxy.credentials, { username: "alice", password: "pa:ss" });
  assertEquals(b.proxyIps, ["192.0.2.1", "2001:db8::1"]);
  assertEquals([b.dns, b.allowDns, b.killSwitch, b.dryRun], [
    ["192.0.2.53"],
    ["192.0.2.54"],
    false,
    true,
  ]);
  assertEquals(b.tunAddress, { address: "10.255.255.1", prefix: 30 });
  const env = await up(
    ["--proxy-host", "p", "--username", "u"],
    (n) => n === "OSTP_PROXY_PASSWORD" ? "from-env" : undefined,
  );
  assertEquals(env.proxy.credentials?.password, "from-env");
  const down = await parseVpnArgs(["down", "--state-dir", "/x"], "c", noEnv);
  assertEquals(down, { kind: "vpn-down", text: "", stateDir: "/x" });
});

Deno.test("vpn cli: a password on the command line is warned about; bad input is a clear error", async () => {
  const r = await parseVpnArgs(["--proxy-url", "http://a:b@192.0.2.1:1"], "c", noEnv);
  assert(r.kind === "vpn-up" && r.warnings.some((w) => w.includes("command line")));
  for (
    const [argv, want] of [
      [[], "give the proxy"],
      [["--proxy-url", "http://192.0.2.1", "--proxy-host", "x"], "not both"],
      [["--proxy-url", "socks5://192.0.2.1"], "scheme"],
      [["--proxy-url", "https://192.0.2.1"], "https"],
      [["--proxy-host", "p", "--proxy-port", "70000"], "--proxy-port"],
      [["--proxy-host", "p", "--dns", "resolver.example"], "--dns"],
      [["--proxy-host", "p", "--proxy-ip", "1.2.3"], "--proxy-ip"],
      [["--proxy-host", "p", "--tun-cidr", "10.0.0.1/31"], "--tun-cidr"],
      [["--proxy-host", "p", "--tun-name", "a b"], "--tun-name"],
      [["--proxy-host", "p", "--password-file", "/none"], "--password-file"],
      [["--proxy-host", "p", "--bogus"], "unknown option"],
    ] as const
  ) {
    const e = await parseVpnArgs([...argv], "c", noEnv, files({}));
    assertEquals(e.kind, "error", JSON.stringify(argv));
    assert(
      "text" in e && e.text.includes(want),
      `${JSON.stringify(argv)}: ${"text" in e ? e.text : ""}`,
    );
  }
  const noUser = await parseVpnArgs(
    ["--proxy-host", "p"],
    "c",
    (n) => n === "OSTP_PROXY_PASSWORD" ? "x" : undefined,
  );
  assert(noUser.kind === "error" && noUser.text.includes("needs a user"));
});

Deno.test("vpn plan: resolvers, the DNS address, the kill switch and no hijack", async () => {
  assertEquals(
    nameserversOf("# x\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n"),
    ["192.0.2.53"],
  );
  assertEquals(nextHost("172.19.0.1", 30), "172.19.0.2");
  assertEquals(nextHost("10.0.0.2", 30), null);
  const o = await up(["--proxy-host", "proxy.example", "--allow-dns", "192.0.2.54"]);
  const p = vpnPlan(o, { proxyIps: ["192.0.2.10"], systemDns: ["192.0.2.53"], backend: "nft" });
  assertEquals(p.proxy.host, "192.0.2.10", "flows connect to the checked address");
  assertEquals(p.tun.dns.upstream, { host: "192.0.2.53", port: 53 });
  assertEquals(p.tun.dns.hijack, false);
  assertEquals(p.allowedDns, ["192.0.2.53", "192.0.2.54"]);
  const ks = JSON.stringify(p.killSwitch);
  assert(ks.includes("ip daddr 192.0.2.10 tcp dport 8080 accept") && ks.includes("192.0.2.54"), ks);
  assertThrows(
    () => vpnPlan(o, { proxyIps: ["192.0.2.10"], systemDns: [], backend: "nft" }),
    Error,
    "--dns",
  );
  assertThrows(
    () => vpnPlan(o, { proxyIps: ["192.0.2.10"], systemDns: ["192.0.2.53"], backend: null }),
    Error,
    "no-killswitch",
  );
  const off = await up(["--proxy-host", "p", "--no-killswitch", "--dns", "192.0.2.53"]);
  assertEquals(
    vpnPlan(off, { proxyIps: ["192.0.2.10"], systemDns: [], backend: null }).killSwitch,
    [],
  );
});
