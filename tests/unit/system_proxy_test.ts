/**
 * The Windows system proxy logic against the in-memory registry: the values
 * written (REG_SZ / REG_DWORD encodings too), exact restore including "not
 * set", restore after a crash (the next start, or `down`), a failed change
 * rolled back, WinINet told each time.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  decodeDword,
  decodeRegSz,
  encodeDword,
  encodeRegSz,
  MemoryRegistry,
  type RegistryApi,
  type RegValue,
} from "../../shared/host/registry.ts";
import {
  INTERNET_SETTINGS,
  ipv4Wildcards,
  proxyOverrideValue,
  proxyServerValue,
  recoverSystemProxy,
  SystemProxy,
} from "../../client/sysproxy/system_proxy.ts";
import { HostJournal } from "../../shared/host/journal.ts";
import { hkcuSubkey } from "../../ffi/registry_windows.ts";

Deno.test("registry encodings: REG_SZ is UTF-16LE with a NUL, REG_DWORD four bytes LE", () => {
  assertEquals(encodeRegSz("A€"), new Uint8Array([0x41, 0, 0xac, 0x20, 0, 0]));
  assertEquals(decodeRegSz(encodeRegSz("http=127.0.0.1:1088")), "http=127.0.0.1:1088");
  assertEquals(decodeRegSz(new Uint8Array([0x68, 0, 0x69, 0])), "hi", "no NUL is fine");
  assertEquals(decodeRegSz(new Uint8Array([0x68, 0, 0, 0, 0x69, 0])), "h", "stops at the NUL");
  assertEquals(encodeDword(1), new Uint8Array([1, 0, 0, 0]));
  assertEquals(encodeDword(0x01020304), new Uint8Array([4, 3, 2, 1]));
  assertEquals(decodeDword(new Uint8Array([4, 3, 2, 1])), 0x01020304);
  assertEquals(decodeDword(new Uint8Array([1, 2])), null);
  assertEquals(
    hkcuSubkey(INTERNET_SETTINGS),
    "Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings",
  );
});

Deno.test("system proxy values: ProxyServer for browsers, ProxyOverride from the exclusions", () => {
  assertEquals(proxyServerValue("127.0.0.1", 1088), "http=127.0.0.1:1088;https=127.0.0.1:1088");
  assertEquals(proxyServerValue("::1", 1088), "http=[::1]:1088;https=[::1]:1088");
  assertEquals(ipv4Wildcards("192.168.0.0/16"), ["192.168.*"]);
  assertEquals(ipv4Wildcards("10.0.0.0/8"), ["10.*"]);
  assertEquals(ipv4Wildcards("10.1.2.3"), ["10.1.2.3"]);
  assertEquals(ipv4Wildcards("172.16.0.0/12").length, 16);
  assertEquals(ipv4Wildcards("172.16.0.0/12")[15], "172.31.*");
  assertEquals(ipv4Wildcards("10.0.0.0/23"), ["10.0.0.*", "10.0.1.*"]);
  assertEquals(
    proxyOverrideValue(["trusted-site.com", ".local.lan"], ["192.168.1.0/24", "fd00::1"]),
    "trusted-site.com;*.trusted-site.com;local.lan;*.local.lan;192.168.1.*;fd00::1;<local>",
  );
  assertEquals(proxyOverrideValue([], []), "<local>");
});

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A user's settings before the client: a manual proxy off, a PAC URL, no override. */
function userSettings(): MemoryRegistry {
  const r = new MemoryRegistry();
  r.set(INTERNET_SETTINGS, "ProxyEnable", { type: "dword", data: 0 });
  r.set(INTERNET_SETTINGS, "ProxyServer", { type: "sz", data: "corp-proxy:8080" });
  r.set(INTERNET_SETTINGS, "AutoConfigURL", { type: "sz", data: "http://wpad/wpad.dat" });
  r.log.length = 0;
  return r;
}

function snapshot(r: MemoryRegistry): Record<string, RegValue | null> {
  const out: Record<string, RegValue | null> = {};
  for (const n of ["ProxyEnable", "ProxyServer", "ProxyOverride", "AutoConfigURL"]) {
    out[n] = r.get(INTERNET_SETTINGS, n);
  }
  return out;
}

Deno.test('system proxy: set while running, restored exactly ("not set" too), WinINet told', async () => {
  await withDir(async (dir) => {
    const reg = userSettings();
    const before = snapshot(reg);
    let notified = 0;
    const { proxy, recovered } = await SystemProxy.enable(
      { host: "127.0.0.1", port: 1088, domains: ["corp.example"], ips: ["10.0.0.0/8"] },
      { journalPath: `${dir}/sysproxy.journal`, registry: reg, notify: () => notified++ },
    );
    assertEquals(recovered, null);
    assertEquals(snapshot(reg), {
      ProxyEnable: { type: "dword", data: 1 },
      ProxyServer: { type: "sz", data: "http=127.0.0.1:1088;https=127.0.0.1:1088" },
      ProxyOverride: { type: "sz", data: "corp.example;*.corp.example;10.*;<local>" },
      AutoConfigURL: null,
    });
    assertEquals(notified, 1);
    const report = await proxy.restore();
    assertEquals(report.failed, []);
    assertEquals(snapshot(reg), before, "every value back, ProxyOverride not set again");
    assertEquals(notified, 2);
  });
});

Deno.test("system proxy: after a crash the next start, or down, puts the user's settings back", async () => {
  await withDir(async (dir) => {
    const reg = userSettings();
    const before = snapshot(reg);
    const path = `${dir}/sysproxy.journal`;
    // A run that crashed: the journal written by another (dead) process, changes made.
    const { journal } = await HostJournal.open(path, { registry: reg, pid: 999_999 });
    await journal.apply({
      kind: "registry",
      what: "system proxy on",
      key: INTERNET_SETTINGS,
      name: "ProxyEnable",
      value: { type: "dword", data: 1 },
    });
    await journal.apply({
      kind: "registry",
      what: "no PAC script",
      key: INTERNET_SETTINGS,
      name: "AutoConfigURL",
      value: null,
    });
    // (kill -9: nothing undone.)
    assertEquals(reg.get(INTERNET_SETTINGS, "ProxyEnable"), { type: "dword", data: 1 });
    let notified = 0;
    const r = await recoverSystemProxy({
      journalPath: path,
      registry: reg,
      notify: () => notified++,
    });
    assertEquals(r?.undone.length, 2);
    assertEquals(snapshot(reg), before);
    assertEquals(notified, 1);
    assertEquals(
      await recoverSystemProxy({ journalPath: path, registry: reg, notify: () => {} }),
      null,
    );
  });
});

Deno.test("system proxy: a change that fails is rolled back, never a proxy half set", async () => {
  await withDir(async (dir) => {
    const inner = userSettings();
    const before = snapshot(inner);
    const failing: RegistryApi = {
      get: (k, n) => inner.get(k, n),
      set: (k, n, v) => {
        if (n === "ProxyOverride") throw new Error("access denied (5)");
        inner.set(k, n, v);
      },
      remove: (k, n) => inner.remove(k, n),
    };
    let error = "";
    try {
      await SystemProxy.enable(
        { host: "127.0.0.1", port: 1088 },
        { journalPath: `${dir}/j`, registry: failing, notify: () => {} },
      );
    } catch (e) {
      error = (e as Error).message;
    }
    assert(/system proxy exclusions: access denied \(5\)/.test(error), error);
    assertEquals(snapshot(inner), before);
  });
});
