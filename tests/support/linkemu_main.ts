/**
 * Runs the link emulator between two TUN devices (root only):
 *   deno run -A tests/support/linkemu_main.ts <tunA> <tunB> '<A→B impairment JSON>' '<B→A JSON>' [seed]
 * Prints "ready" once both devices exist (move them into namespaces then);
 * on SIGTERM prints the counters as one JSON line and exits.
 * @module
 */

import { LinuxTun } from "../../ffi/tun_linux.ts";
import { CLEAN, ImpairedLink, type Impairment } from "./linkemu.ts";

const [nameA, nameB, abJson = "{}", baJson = "{}", seedArg = "1"] = Deno.args;
const seed = Number(seedArg);
const ab: Impairment = { ...CLEAN, ...JSON.parse(abJson) };
const ba: Impairment = { ...CLEAN, ...JSON.parse(baJson) };
const tunA = LinuxTun.open(nameA);
const tunB = LinuxTun.open(nameB);
const links = { ab: new ImpairedLink(ab, seed), ba: new ImpairedLink(ba, seed + 1) };

function pump(from: LinuxTun, to: LinuxTun, link: ImpairedLink): Promise<void> {
  const buf = new Uint8Array(65536);
  const due: Uint8Array[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timerAt = Infinity;
  const release = () => {
    timer = undefined;
    timerAt = Infinity;
    link.due(performance.now(), due);
    for (const p of due) to.write(p as Uint8Array<ArrayBuffer>);
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
      const n = await from.read(buf);
      if (n <= 0) continue;
      if (link.passthrough) {
        if (!link.loseNow()) to.write(buf.subarray(0, n));
        continue;
      }
      link.push(buf.slice(0, n), performance.now());
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
