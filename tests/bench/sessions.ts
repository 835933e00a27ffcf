/**
 * Session-scale figures: memory per idle session at 1,000 sessions, and the
 * server's handshake rate (hellos answered per second). Run alone with
 * `deno run -A tests/bench/sessions.ts`, or from `deno task bench`.
 * @module
 */

import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";
import { freePort, spawnDeno } from "../support/daemons.ts";
import { openSessions } from "../support/loadgen.ts";

/** Figures of {@link benchSessions}. */
export interface SessionFigures {
  sessions: number;
  rssBeforeMiB: number;
  rssAfterMiB: number;
  kibPerSession: number;
  handshakesPerSecond: number;
}

/** Opens `count` idle sessions against a fresh server and measures. */
export async function benchSessions(count = 1000): Promise<SessionFigures> {
  const key = generateAccessKey();
  const port = freePort("udp");
  const config = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      listen: [`127.0.0.1:${port}`],
      keys: [formatAccessKey(key, "hex")],
      maxSessions: count + 5000,
      handshakeRate: 100000,
      handshakeBurst: 100000,
      log: { level: "warning", format: "text" },
    }),
  );
  const server = spawnDeno("server", "server/main.ts", ["--config", config]);
  try {
    await server.waitFor(/share link/);
    // Warm up code paths so the figure is the sessions, not the JIT.
    await openSessions(key, port, 50, { perSecond: 500, settleMs: 300 });
    await new Promise((r) => setTimeout(r, 500));
    const before = await server.statsDump();
    const warm = before.stats.sessions as number;
    await openSessions(key, port, count, { perSecond: 250, settleMs: 1500 });
    const after = await server.statsDump();
    const opened = (after.stats.sessions as number) - warm;
    // Handshake rate: a burst far above what the server can answer.
    const t0 = performance.now();
    const cpu0 = server.cpuSeconds();
    const burst = await openSessions(key, port, 2000, { perSecond: 100000, settleMs: 300 });
    const cpu = server.cpuSeconds() - cpu0;
    void t0;
    return {
      sessions: opened,
      rssBeforeMiB: before.rssBytes / 2 ** 20,
      rssAfterMiB: after.rssBytes / 2 ** 20,
      kibPerSession: (after.rssBytes - before.rssBytes) / 1024 / Math.max(1, opened),
      handshakesPerSecond: burst.answered / Math.max(cpu, 1e-3),
    };
  } finally {
    await server.stop();
    await Deno.remove(config);
  }
}

if (import.meta.main) {
  const f = await benchSessions();
  console.log(`idle sessions: ${f.sessions}`);
  console.log(`  server RSS ${f.rssBeforeMiB.toFixed(1)} → ${f.rssAfterMiB.toFixed(1)} MiB`);
  console.log(`  memory per idle session ${f.kibPerSession.toFixed(1)} KiB`);
  console.log(`  handshakes per CPU second ${f.handshakesPerSecond.toFixed(0)}`);
}
