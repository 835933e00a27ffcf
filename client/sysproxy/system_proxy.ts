/**
 * The Windows system proxy (WinINet, what Edge, Chrome and Firefox's "use
 * system proxy" read; docs/windows.md): while the client runs, the current
 * user's Internet Settings point at its local proxy —
 * `ProxyServer = http=127.0.0.1:1088;https=127.0.0.1:1088`, `ProxyEnable = 1`,
 * `ProxyOverride` from the `exclude` block plus `<local>`, and no
 * `AutoConfigURL` (a PAC script would win over them). Every previous value,
 * "not set" included, goes to the host journal before it is changed; a clean
 * exit puts them back exactly, and after a crash the next start (or `down`)
 * does. WinINet is told after each change (`InternetSetOptionW`).
 *
 * The logic runs on any OS against `shared/host/registry.ts`'s fake; the real
 * registry and WinINet are `ffi/registry_windows.ts` and `ffi/wininet_windows.ts`.
 * @module
 */

import { HostJournal, type RegistryChange, type UndoReport } from "../../shared/host/journal.ts";
import type { RegistryApi } from "../../shared/host/registry.ts";
import { parseIPv4 } from "../../shared/net/ip.ts";

/** The key WinINet reads the per-user proxy from. */
export const INTERNET_SETTINGS =
  "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings";

/** What the system proxy points at and leaves out. */
export interface SystemProxyOptions {
  /** The local proxy's address (an IP literal). */
  host: string;
  port: number;
  /** Domain suffixes that bypass the proxy (`exclude.domains`). */
  domains?: readonly string[];
  /** CIDRs and addresses that bypass it (`exclude.ips`). */
  ips?: readonly string[];
}

/** `ProxyServer`'s value: the same proxy for http and https, as browsers read it. */
export function proxyServerValue(host: string, port: number): string {
  const hp = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  return `http=${hp};https=${hp}`;
}

/** Most wildcard entries one non-octet-aligned IPv4 prefix expands to. */
const MAX_EXPANSION = 64;

/**
 * An IPv4 prefix as WinINet wildcards (`192.168.*`): WinINet has no CIDR
 * syntax, so a prefix that is not on an octet boundary is expanded to the
 * octet-aligned prefixes it covers (at most {@link MAX_EXPANSION}; past that
 * the covering wildcard of the shorter prefix is used, bypassing a little more).
 */
export function ipv4Wildcards(cidr: string): string[] {
  const [addr, lenText] = cidr.split("/");
  const b = parseIPv4(addr);
  if (!b) return [];
  const len = lenText === undefined ? 32 : Number(lenText);
  if (!Number.isInteger(len) || len < 0 || len > 32) return [];
  if (len === 32) return [addr];
  const octets = Math.ceil(len / 8);
  const fixedBits = octets * 8 - len; // bits of the last octet the prefix leaves free
  const count = 1 << fixedBits;
  const base = Array.from(b.subarray(0, octets));
  if (octets === 0) return ["*"];
  if (count > MAX_EXPANSION) {
    const shorter = base.slice(0, octets - 1);
    return [shorter.length ? `${shorter.join(".")}.*` : "*"];
  }
  const out: string[] = [];
  const last = base[octets - 1] & ~(count - 1) & 0xff;
  for (let i = 0; i < count; i++) {
    const parts = [...base.slice(0, octets - 1), last + i];
    out.push(octets === 4 ? parts.join(".") : `${parts.join(".")}.*`);
  }
  return out;
}

/** `ProxyOverride`'s value: the exclusions as WinINet patterns, then `<local>`. */
export function proxyOverrideValue(domains: readonly string[], ips: readonly string[]): string {
  const out: string[] = [];
  for (const d of domains) {
    const s = d.trim().replace(/^\*?\.?/, "").toLowerCase();
    if (!s) continue;
    out.push(s, `*.${s}`);
  }
  for (const ip of ips) {
    const t = ip.trim();
    if (t.includes(":")) out.push(t.split("/")[0]); // IPv6: the address (WinINet takes literals)
    else out.push(...ipv4Wildcards(t));
  }
  out.push("<local>");
  return [...new Set(out)].join(";");
}

/** The registry changes that point the system proxy at `o`, in the order they are made. */
export function systemProxyChanges(o: SystemProxyOptions): RegistryChange[] {
  const at = (name: string, value: RegistryChange["value"], what: string): RegistryChange => ({
    kind: "registry",
    what,
    key: INTERNET_SETTINGS,
    name,
    value,
  });
  return [
    at("AutoConfigURL", null, "no PAC script while the client runs"),
    at(
      "ProxyServer",
      { type: "sz", data: proxyServerValue(o.host, o.port) },
      "system proxy server",
    ),
    at(
      "ProxyOverride",
      { type: "sz", data: proxyOverrideValue(o.domains ?? [], o.ips ?? []) },
      "system proxy exclusions",
    ),
    at("ProxyEnable", { type: "dword", data: 1 }, "system proxy on"),
  ];
}

/** The system proxy, set for as long as the client runs. */
export class SystemProxy {
  private constructor(
    private readonly journal: HostJournal,
    private readonly notify: () => void,
  ) {}

  /**
   * Sets the system proxy (journaled at `journalPath`; what a crashed run left
   * there is put back first and reported). If a change fails, what was made
   * is undone before the error is thrown: never a proxy half set.
   */
  static async enable(
    o: SystemProxyOptions,
    deps: { journalPath: string; registry: RegistryApi; notify: () => void },
  ): Promise<{ proxy: SystemProxy; recovered: UndoReport | null }> {
    const { journal, recovered } = await HostJournal.open(deps.journalPath, {
      registry: deps.registry,
      owner: "ostp-client system proxy",
    });
    if (recovered && recovered.undone.length > 0) deps.notify();
    const proxy = new SystemProxy(journal, deps.notify);
    try {
      for (const c of systemProxyChanges(o)) await journal.apply(c);
    } catch (e) {
      await proxy.restore();
      throw e;
    }
    deps.notify();
    return { proxy, recovered };
  }

  /** Puts every value back as it was (exactly: "not set" is removed again). */
  async restore(): Promise<UndoReport> {
    const r = await this.journal.undoAll();
    this.notify();
    return r;
  }
}

/**
 * Puts back what a crashed run left (the `down` command, and every start):
 * the report, or null when there was nothing.
 */
export async function recoverSystemProxy(
  deps: { journalPath: string; registry: RegistryApi; notify: () => void },
): Promise<UndoReport | null> {
  const r = await HostJournal.recover(deps.journalPath, { registry: deps.registry });
  if (r && r.undone.length > 0) deps.notify();
  return r;
}

/** Where the system proxy's journal lives: `%LOCALAPPDATA%\ostp\sysproxy.journal`. */
export function defaultSystemProxyJournal(env: (name: string) => string | undefined): string {
  const base = env("LOCALAPPDATA") ?? env("APPDATA") ?? env("TEMP") ?? ".";
  return `${base.replace(/\\/g, "/")}/ostp/sysproxy.journal`;
}
