/**
 * Correctness under impairment: client, server and target in their own
 * namespaces, the client ⇄ server link through the project's emulator. Eight
 * concurrent streams through the SOCKS5 proxy, one of them a 64 MiB bulk
 * transfer, must arrive complete and byte-exact under every profile.
 */
import { assertEquals } from "../support/assert.ts";
import { payload, sha256Hex } from "../support/daemons.ts";
import type { Impairment } from "../support/linkemu.ts";
import { ADDR, canUseNetns, Testbed } from "../support/netns.ts";
import { startTunnel } from "../support/tunnel_bed.ts";

const MiB = 1024 * 1024;
const enabled = await canUseNetns();
if (!enabled) console.log("SKIPPED netns impairment tests: need root, ip netns and /dev/net/tun");

const PROFILES: [string, Partial<Impairment>][] = [
  ["40 ms RTT", { delayMs: 20 }],
  ["2% loss each way", { loss: 0.02 }],
  ["10% loss each way", { loss: 0.1 }],
  ["25% reordering", { delayMs: 5, reorder: 0.25, reorderMs: 8 }],
  ["5% duplication", { duplicate: 0.05 }],
  ["20 Mbit/s cap, 1000-packet queue", { rateMbps: 20, queuePackets: 1000 }],
  ["all together", {
    delayMs: 20,
    loss: 0.1,
    reorder: 0.25,
    reorderMs: 8,
    duplicate: 0.05,
    rateMbps: 20,
    queuePackets: 1000,
  }],
];

const SIZES = [64 * MiB, ...Array.from({ length: 7 }, (_, i) => (i + 1) * 256 * 1024 + i)];

for (const [name, profile] of PROFILES) {
  Deno.test({
    name: `netns: 8 streams (one 64 MiB) intact under ${name}`,
    ignore: !enabled,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const tb = await Testbed.create(profile, profile, 17);
      const bed = await startTunnel(tb);
      const tmp = await Deno.makeTempDir({ prefix: "ostp-netns-" });
      try {
        const args = [
          "-sS",
          "-Z",
          "--parallel-max",
          "8",
          "--socks5-hostname",
          `127.0.0.1:${bed.proxyPort}`,
        ];
        SIZES.forEach((n, i) =>
          args.push("-o", `${tmp}/f${i}`, `http://${ADDR.target}:8080/bytes/${n}?seed=${i + 1}`)
        );
        const r = await tb.exec(tb.client, "curl", args);
        assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
        for (let i = 0; i < SIZES.length; i++) {
          const got = await Deno.readFile(`${tmp}/f${i}`);
          assertEquals(got.length, SIZES[i], `stream ${i} length`);
          assertEquals(
            await sha256Hex(got),
            await sha256Hex(payload(SIZES[i], i + 1)),
            `stream ${i}`,
          );
        }
      } finally {
        await bed.stop();
        await tb.close();
        await Deno.remove(tmp, { recursive: true });
      }
    },
  });
}
