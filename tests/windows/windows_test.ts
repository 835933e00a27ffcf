/**
 * What only a real Windows machine can show (the release workflow's Windows
 * job runs it; elsewhere every test is ignored): the system proxy round trip
 * on the current user's registry, read back by WinINet's own key, and a
 * Wintun adapter brought up and down (needs wintun.dll beside deno, or
 * OSTP_WINTUN_DLL, and Administrator).
 */
import { assert, assertEquals } from "../support/assert.ts";

const windows = Deno.build.os === "windows";

Deno.test({
  name: "windows: system proxy set and put back exactly on the real registry",
  ignore: !windows,
  async fn() {
    const { WindowsRegistry } = await import("../../ffi/registry_windows.ts");
    const { notifyProxyChanged } = await import("../../ffi/wininet_windows.ts");
    const { INTERNET_SETTINGS, SystemProxy } = await import(
      "../../client/sysproxy/system_proxy.ts"
    );
    const reg = new WindowsRegistry();
    const names = ["ProxyEnable", "ProxyServer", "ProxyOverride", "AutoConfigURL"];
    const before = names.map((n) => reg.get(INTERNET_SETTINGS, n));
    const dir = await Deno.makeTempDir();
    try {
      const { proxy } = await SystemProxy.enable(
        { host: "127.0.0.1", port: 1088, domains: ["example.test"] },
        {
          journalPath: `${dir}/sysproxy.journal`,
          registry: reg,
          notify: () => notifyProxyChanged(),
        },
      );
      assertEquals(reg.get(INTERNET_SETTINGS, "ProxyEnable"), { type: "dword", data: 1 });
      assertEquals(reg.get(INTERNET_SETTINGS, "ProxyServer"), {
        type: "sz",
        data: "http=127.0.0.1:1088;https=127.0.0.1:1088",
      });
      await proxy.restore();
      assertEquals(names.map((n) => reg.get(INTERNET_SETTINGS, n)), before);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "windows: a Wintun adapter comes up, takes a packet and goes away",
  ignore: !windows,
  async fn() {
    const { openWintun } = await import("../../ffi/tun_windows.ts");
    const { PacketBatch } = await import("../../shared/tun/device.ts");
    const dll = Deno.env.get("OSTP_WINTUN_DLL");
    const dev = openWintun({ name: "ostp-ci", mtu: 1420, ...(dll ? { dll } : {}) });
    try {
      const b = new PacketBatch(1, 1420);
      const p = new Uint8Array(28);
      p[0] = 0x45;
      p[3] = 28;
      p[8] = 64;
      p[9] = 17;
      p.set([10, 99, 0, 2], 12);
      p.set([10, 99, 0, 1], 16);
      b.push(p);
      assertEquals(dev.writeBatch(b), 1);
    } finally {
      dev.close();
    }
    assert(dev.closed);
  },
});
