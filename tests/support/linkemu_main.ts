/**
 * Runs the link emulator between two TUN devices (root only):
 *   deno run -A tests/support/linkemu_main.ts <tunA> <tunB> '<A→B impairment JSON>' '<B→A JSON>' [seed]
 * Prints "ready" once both devices exist (move them into namespaces then);
 * on SIGTERM prints the counters as one JSON line and exits.
 * @module
 */

import { LinuxTun } from "../../ffi/tun_linux.ts";
import { MAX_PACKET, PacketBatch } from "../../shared/tun/device.ts";
import { CLEAN, ImpairedLink, type Impairment } from "./linkemu.ts";

const [nameA, nameB, abJson = "{}", baJson = "{}", seedArg = "1"] = Deno.args;
const seed = Number(seedArg);
const ab: Impairment = { ...CLEAN, ...JSON.parse(abJson) };
const ba: Impairment = { ...CLEAN, ...JSON.parse(baJson) };
const tunA = LinuxTun.open(nameA);
const tunB = LinuxTun.open(nameB);
const links = { ab: new ImpairedLink(ab, seed), ba: new ImpairedLink(ba, seed + 1) };

function pump(from: LinuxTun, to: LinuxTun, link: ImpairedLink): Promise<void> {
  const batch = new PacketBatch(64, MAX_PACKET);
  const due: Uint8Array[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timerAt = Infinity;
  const release = () => {
    timer = undefined;
    timerAt = Infinity;
    link.due(performance.now(), due);
    for (const p of due) to.writePacket(p as Uint8Array<ArrayBuffer>);
    due.length = 0;
    arm();
  };
  const arm = () => {
    const next = link.nextAt;
    if (next === Infinity || next >= timerAt) return;
    if (timer !== undefined) clearTimeout(timer);
    timerAt = next;
    timer = setTimeout(release, Math.max(0, next - performance.now()));
  };
  return (async () => {
    for (;;) {
      const count = await from.readBatch(batch);
      if (count === 0) return;
      if (link.passthrough) {
        let keep = 0;
        for (let i = 0; i < count; i++) {
          if (link.loseNow()) continue;
          if (keep !== i) {
            batch.slots[keep].set(batch.packet(i));
            batch.lengths[keep] = batch.lengths[i];
          }
          keep++;
        }
        if (keep > 0) to.writeBatch(batch, 0, keep);
        continue;
      }
      const now = performance.now();
      for (let i = 0; i < count; i++) link.push(batch.packet(i).slice(), now);
      arm();
    }
  })();
}

pump(tunA, tunB, links.ab);
pump(tunB, tunA, links.ba);
const stop = () => {
  console.log(JSON.stringify({ ab: links.ab.counters, ba: links.ba.counters }));
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
console.log("ready");
