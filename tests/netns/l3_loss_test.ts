/**
 * Layer 3 under loss, no meltdown: through the link emulator (20 ms each
 * way, 2% loss each way, 40 Mbit/s), iperf3 TCP inside the layer-3 tunnel against iperf3
 * over the same emulated path without the tunnel. Packets ride unreliable
 * datagrams, so the inner TCP sees the loss once and recovers on its own;
 * reliable carriage would stack two retransmission loops (TCP over TCP).
 * Want: tunnel goodput at least 50% of the bare path's.
 */
import { assert } from "../support/assert.ts";
import { ADDR, canUseNetns, Testbed } from "../support/netns.ts";
import { which } from "../support/sh.ts";
import { formatAccessKey, generateAccessKey } from "../../shared/crypto/keys.ts";

const enabled = await canUseNetns() && !!(await which("iperf3"));
if (!enabled) console.log("SKIPPED netns layer-3 loss test: need root, ip netns, iperf3");

const dec = new TextDecoder();
/** bbr where the kernel has it (random loss halves cubic's window each time: noisy figures). */
const CC =
  (await Deno.readTextFile("/proc/sys/net/ipv4/tcp_available_congestion_control").catch(() => ""))
      .split(/\s+/).includes("bbr")
    ? "bbr"
    : "cubic";

async function iperf(tb: Testbed, bind: string): Promise<number> {
  const srv = tb.spawn(`iperf3 ${bind}`, tb.server, "iperf3", ["-s", "-B", bind, "-1"]);
  try {
    await new Promise((r) => setTimeout(r, 300));
    const r = await tb.exec(tb.client, "iperf3", ["-c", bind, "-t", "6", "-J", "-C", CC]);
    const j = JSON.parse(dec.decode(r.stdout) || "{}");
    if (j.error) throw new Error(`iperf3 to ${bind}: ${j.error}`);
    return j.end.sum_received.bits_per_second / 1e6;
  } finally {
    await srv.stop();
  }
}

Deno.test({
  name: "netns: layer-3 TCP through 40 ms + 2% loss keeps ≥ 50% of the bare path's goodput",
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // A 40 Mbit/s cap: the figure then measures the path, not how much CPU two cores have left.
    const imp = { delayMs: 20, loss: 0.02, rateMbps: 40, queuePackets: 400 };
    const tb = await Testbed.create(imp, imp, 31);
    const dir = await Deno.makeTempDir({ prefix: "ostp-l3loss-" });
    try {
      const key = formatAccessKey(generateAccessKey(), "hex");
      await Deno.writeTextFile(
        `${dir}/server.json`,
        JSON.stringify({
          listen: [`${ADDR.server}:8443`],
          keys: [key],
          l3: { subnet: "10.77.0.0/24", stateDir: `${dir}/srv` },
        }),
      );
      await Deno.writeTextFile(`${dir}/key`, key + "\n", { mode: 0o600 });
      const server = tb.spawnDeno("server", tb.server, "server/main.ts", [
        "-c",
        `${dir}/server.json`,
        "--workers",
        "1",
      ]);
      const client = tb.spawnDeno("client", tb.client, "client/main.ts", [
        "-s",
        `${ADDR.server}:8443`,
        "--key-file",
        `${dir}/key`,
        "--l3",
        "--state-dir",
        `${dir}/cli`,
        "-l",
        "127.0.0.1:0",
      ]);
      try {
        await server.waitFor(/layer-3 hub ostp-hub up/, 30_000);
        await client.waitFor(/layer 3 up/, 30_000);
        const bare = await iperf(tb, ADDR.server);
        const tunnel = await iperf(tb, "10.77.0.1");
        console.log(
          `iperf3 ${CC}, 40 ms RTT + 2% loss each way, 40 Mbit/s: bare ${
            bare.toFixed(1)
          } Mbit/s, ` +
            `through layer 3 ${tunnel.toFixed(1)} Mbit/s (${((100 * tunnel) / bare).toFixed(0)}%)`,
        );
        assert(tunnel >= 0.5 * bare, `goodput ${tunnel.toFixed(1)} < 50% of ${bare.toFixed(1)}`);
      } finally {
        await client.stop();
        await server.stop();
      }
    } finally {
      await tb.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
