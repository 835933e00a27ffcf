/**
 * The system proxy on the real Windows registry and WinINet (the logic is
 * `system_proxy.ts`, tested against a fake): loaded only on Windows.
 * @module
 */

import {
  defaultSystemProxyJournal,
  recoverSystemProxy,
  SystemProxy,
  type SystemProxyOptions,
} from "./system_proxy.ts";
import type { UndoReport } from "../../shared/host/journal.ts";
import { WindowsRegistry } from "../../ffi/registry_windows.ts";
import { notifyProxyChanged } from "../../ffi/wininet_windows.ts";
import "../../ffi/process_windows.ts"; // the journal's liveness check on Windows

function deps() {
  return {
    journalPath: defaultSystemProxyJournal((n) => Deno.env.get(n)),
    registry: new WindowsRegistry(),
    notify: () => void notifyProxyChanged(),
  };
}

/** Sets the system proxy for this run (putting back what a crashed run left first). */
export async function enableWindowsSystemProxy(o: SystemProxyOptions): Promise<SystemProxy> {
  if (Deno.build.os !== "windows") {
    throw new Error(
      "--system-proxy sets the Windows system proxy: on this OS, point programs at the proxy",
    );
  }
  return (await SystemProxy.enable(o, deps())).proxy;
}

/** `down`: puts back what a crashed run left; null when nothing was left. */
export async function recoverWindowsSystemProxy(): Promise<UndoReport | null> {
  return await recoverSystemProxy(deps());
}
