/**
 * What the client logs while its server stays unreachable: one warning for
 * the outage, a reminder at info level about every `outageReminderMs`, every
 * other retry at debug level only.
 */
import { assert, assertEquals } from "../support/assert.ts";
import {
  addLogListener,
  formatAccessKey,
  generateAccessKey,
  OstpClient,
  parseClientConfig,
  setupLogging,
} from "../../mod.ts";
import { freePort } from "../support/daemons.ts";

Deno.test({
  name: "client log: one warning per outage, an info reminder while it lasts, debug otherwise",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await setupLogging({ level: "debug", format: "text" }, { output: null });
    const records: { level: string; message: string }[] = [];
    const off = addLogListener((r) => {
      if (r.category === "client") records.push({ level: r.level, message: r.message });
    });
    const port = freePort("udp"); // nobody answers there
    const client = new OstpClient(
      parseClientConfig({
        server: `127.0.0.1:${port}`,
        key: formatAccessKey(generateAccessKey(), "hex"),
        listen: "127.0.0.1:0",
        connectTimeout: 0.2,
        reconnect: { initialDelay: 0.05, maxDelay: 0.1 },
      }),
      { outageReminderMs: 1000, statsIntervalMs: 60_000 },
    );
    try {
      await client.start();
      await new Promise((r) => setTimeout(r, 3600));
    } finally {
      await client.stop();
      off();
    }
    const about = records.filter((r) => /attempt|retrying|no connection/.test(r.message));
    const warnings = about.filter((r) => r.level === "warning");
    assertEquals(warnings.length, 1, JSON.stringify(about));
    assert(warnings[0].message.includes("no answer from server; retrying with back-off"));
    const reminders = about.filter((r) => r.level === "info");
    assert(reminders.length >= 2 && reminders.length <= 4, `${reminders.length} reminders`);
    assert(reminders.every((r) => /still no connection after \d+ attempts/.test(r.message)));
    const debug = about.filter((r) => r.level === "debug");
    assert(debug.length >= 3, `${debug.length} debug lines`);
    assertEquals(about.length, warnings.length + reminders.length + debug.length);
  },
});
