import { assertEquals, assertThrows } from "../support/assert.ts";
import { DatagramDemux, DatagramKind } from "../../shared/session/datagram_demux.ts";

Deno.test("datagram demux: each kind to its handler; empty and unknown kinds counted", () => {
  const d = new DatagramDemux();
  const got: string[] = [];
  const offUdp = d.on(DatagramKind.udp, (p) => got.push(`udp ${p.length}`));
  d.on(DatagramKind.l3, (p) => got.push(`l3 ${p[1]}`));
  d.handle(new Uint8Array([1, 9, 9]));
  d.handle(new Uint8Array([2, 0x45]));
  d.handle(new Uint8Array([7, 1]));
  d.handle(new Uint8Array(0));
  assertEquals(got, ["udp 3", "l3 69"]);
  assertEquals(d.dropped, 2);
  offUdp();
  d.handle(new Uint8Array([1]));
  assertEquals(d.dropped, 3);
  assertThrows(() => d.on(256, () => {}));
});
