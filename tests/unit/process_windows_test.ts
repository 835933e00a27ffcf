/**
 * Windows process lookup without Windows: the iphlpapi row decoders on hand-built tables
 * (MIB_TCPROW_OWNER_PID, MIB_TCP6ROW_OWNER_PID, MIB_UDPROW_OWNER_PID, MIB_UDP6ROW_OWNER_PID),
 * UTF-16 paths, owner matching on decoded rows, and the platform factory.
 */

import { assert, assertEquals, assertRejects, assertThrows } from "../support/assert.ts";
import {
  decodeUtf16,
  parseTcp4Table,
  parseTcp6Table,
  parseUdp4Table,
  parseUdp6Table,
  portFromDword,
  readTcpTable,
  TableFormatError,
  TCP4_ROW_SIZE,
  TCP6_ROW_SIZE,
  UDP4_ROW_SIZE,
  UDP6_ROW_SIZE,
  WIN_AF_INET,
} from "../../ffi/process_windows.ts";
import {
  bestOwnerRow,
  createProcessResolver,
  prepareQuery,
  WindowsProcessResolver,
} from "../../client/router/process.ts";
import { LinuxProcessResolver } from "../../client/router/process_linux.ts";

/** Builds a table: a LE DWORD count, then the rows written by `row(view, offset, i)`. */
function table(rows: number, size: number, row: (v: DataView, o: number, i: number) => void) {
  const b = new Uint8Array(4 + rows * size);
  const v = new DataView(b.buffer);
  v.setUint32(0, rows, true);
  for (let i = 0; i < rows; i++) row(v, 4 + i * size, i);
  return b;
}

/** A port DWORD as Windows fills it: network order in the low 16 bits, junk above. */
function port(v: DataView, o: number, p: number) {
  v.setUint16(o, p, false);
  v.setUint16(o + 2, 0xbeef, true);
}

function bytes(v: DataView, o: number, b: number[]) {
  b.forEach((x, i) => v.setUint8(o + i, x));
}

const LOOP6 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const MAPPED = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];

Deno.test("row sizes match the Windows structs", () => {
  assertEquals([TCP4_ROW_SIZE, TCP6_ROW_SIZE, UDP4_ROW_SIZE, UDP6_ROW_SIZE], [24, 56, 12, 28]);
  assertEquals(portFromDword(new Uint8Array([0x04, 0x38, 0xff, 0xff]), 0), 1080);
});

Deno.test("parseTcp4Table: MIB_TCPROW_OWNER_PID", () => {
  const b = table(2, TCP4_ROW_SIZE, (v, o, i) => {
    v.setUint32(o, i === 0 ? 2 : 5, true); // LISTEN, ESTAB
    bytes(v, o + 4, i === 0 ? [0, 0, 0, 0] : [127, 0, 0, 1]);
    port(v, o + 8, i === 0 ? 1080 : 50000);
    bytes(v, o + 12, i === 0 ? [0, 0, 0, 0] : [127, 0, 0, 1]);
    port(v, o + 16, i === 0 ? 0 : 1080);
    v.setUint32(o + 20, i === 0 ? 1234 : 70000, true);
  });
  assertEquals(parseTcp4Table(b), [
    {
      state: 2,
      local: { host: "0.0.0.0", port: 1080 },
      remote: { host: "0.0.0.0", port: 0 },
      pid: 1234,
    },
    {
      state: 5,
      local: { host: "127.0.0.1", port: 50000 },
      remote: { host: "127.0.0.1", port: 1080 },
      pid: 70000,
    },
  ]);
  // A table inside a bigger buffer (as GetExtendedTcpTable leaves it) and an empty one.
  const big = new Uint8Array(b.length + 100);
  big.set(b);
  assertEquals(parseTcp4Table(big).length, 2);
  assertEquals(parseTcp4Table(new Uint8Array(4)), []);
  assertThrows(() => parseTcp4Table(b.subarray(0, b.length - 1)), TableFormatError);
  assertThrows(() => parseTcp4Table(new Uint8Array(3)), TableFormatError);
});

Deno.test("parseTcp6Table: MIB_TCP6ROW_OWNER_PID, IPv6 and mapped", () => {
  const b = table(1, TCP6_ROW_SIZE, (v, o) => {
    bytes(v, o, LOOP6);
    v.setUint32(o + 16, 7, true); // scope id
    port(v, o + 20, 443);
    bytes(v, o + 24, MAPPED);
    v.setUint32(o + 40, 0, true);
    port(v, o + 44, 61000);
    v.setUint32(o + 48, 5, true);
    v.setUint32(o + 52, 4321, true);
  });
  assertEquals(parseTcp6Table(b), [
    {
      local: { host: "::1", port: 443 },
      remote: { host: "::ffff:127.0.0.1", port: 61000 },
      state: 5,
      pid: 4321,
    },
  ]);
  assertThrows(() => parseTcp6Table(b.subarray(0, 40)), TableFormatError);
});

Deno.test("parseUdp4Table and parseUdp6Table", () => {
  const u4 = table(2, UDP4_ROW_SIZE, (v, o, i) => {
    bytes(v, o, i === 0 ? [0, 0, 0, 0] : [192, 168, 1, 20]);
    port(v, o + 4, i === 0 ? 5353 : 27015);
    v.setUint32(o + 8, 100 + i, true);
  });
  assertEquals(parseUdp4Table(u4).map((r) => [r.local.host, r.local.port, r.pid, r.remote.port]), [
    ["0.0.0.0", 5353, 100, 0],
    ["192.168.1.20", 27015, 101, 0],
  ]);
  const u6 = table(1, UDP6_ROW_SIZE, (v, o) => {
    bytes(v, o, [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42]);
    v.setUint32(o + 16, 0, true);
    port(v, o + 20, 3478);
    v.setUint32(o + 24, 999, true);
  });
  assertEquals(parseUdp6Table(u6), [
    {
      local: { host: "2001:db8::42", port: 3478 },
      remote: { host: "::", port: 0 },
      state: 0,
      pid: 999,
    },
  ]);
  assertThrows(() => parseUdp6Table(u6.subarray(0, 31)), TableFormatError);
});

Deno.test("decodeUtf16: QueryFullProcessImageNameW output", () => {
  const path = "C:\\Program Files (x86)\\Steam\\Müller 🎮\\steam.exe";
  const b = new Uint8Array(200);
  for (let i = 0; i < path.length; i++) {
    new DataView(b.buffer).setUint16(i * 2, path.charCodeAt(i), true);
  }
  assertEquals(decodeUtf16(b, path.length), path);
  assertEquals(decodeUtf16(b, 2), "C:");
  assertEquals(decodeUtf16(b, 1000).startsWith(path), true, "clamped to the buffer");
});

Deno.test("bestOwnerRow picks the client's row, not ours or the listener", () => {
  const rows = parseTcp4Table(table(4, TCP4_ROW_SIZE, (v, o, i) => {
    const spec = [
      [11, [127, 0, 0, 1], 50000, [127, 0, 0, 1], 1080, 0], // an old TIME_WAIT, no owner
      [2, [0, 0, 0, 0], 1080, [0, 0, 0, 0], 0, 10], // our listener
      [5, [127, 0, 0, 1], 1080, [127, 0, 0, 1], 50000, 10], // our accepted end
      [5, [127, 0, 0, 1], 50000, [127, 0, 0, 1], 1080, 20], // the client
    ][i] as [number, number[], number, number[], number, number];
    v.setUint32(o, spec[0], true);
    bytes(v, o + 4, spec[1]);
    port(v, o + 8, spec[2]);
    bytes(v, o + 12, spec[3]);
    port(v, o + 16, spec[4]);
    v.setUint32(o + 20, spec[5], true);
  }));
  const q = prepareQuery({
    network: "tcp",
    local: { host: "::ffff:127.0.0.1", port: 50000 },
    remote: { host: "127.0.0.1", port: 1080 },
  });
  assert(q);
  assertEquals(bestOwnerRow(q, rows)?.pid, 20);
  const miss = prepareQuery({
    network: "tcp",
    local: { host: "127.0.0.1", port: 50001 },
    remote: { host: "127.0.0.1", port: 1080 },
  });
  assert(miss);
  assertEquals(bestOwnerRow(miss, rows), null);
});

Deno.test("factory: per platform, and no DLL is opened off Windows", async () => {
  assertEquals(await createProcessResolver({}, "darwin"), null);
  assert((await createProcessResolver({}, "linux")) instanceof LinuxProcessResolver);
  const w = await createProcessResolver({ timeoutMs: 100 }, "windows");
  assert(w instanceof WindowsProcessResolver);
  if (Deno.build.os !== "windows") {
    await assertRejects(() => readTcpTable(WIN_AF_INET));
    await assertRejects(() =>
      w.lookup({
        network: "tcp",
        local: { host: "127.0.0.1", port: 50000 },
        remote: { host: "127.0.0.1", port: 1080 },
      })
    );
  }
});
