/**
 * Cross-check with a decoder nobody here wrote: packets our emitters build (TCP with every
 * option, UDP, ICMP errors and echo replies, a reassembled datagram) are written to a pcap
 * and decoded by tshark with checksum validation on. Skipped, visibly, without tshark.
 */
import { assert, assertEquals, fromHex } from "../support/assert.ts";
import { readFixture, writePcap } from "../support/pcap.ts";
import { emitIpHeader, parseIp } from "../../shared/netstack/wire/packet.ts";
import {
  emitTcp,
  TcpFlags,
  tcpHeaderLength,
  type TcpRepr,
} from "../../shared/netstack/wire/tcp.ts";
import { emitUdp } from "../../shared/netstack/wire/udp.ts";
import { buildEchoReply, buildIcmpError, IcmpErrorKind } from "../../shared/netstack/wire/icmp.ts";
import { IpProtocol } from "../../shared/netstack/wire/ip_protocol.ts";
import { Reassembler } from "../../shared/netstack/reassembly.ts";

const A4 = fromHex("0a4d0001");
const B4 = fromHex("0a4d0002");
const A6 = fromHex("fd770000000000000000000000000001");
const B6 = fromHex("fd770000000000000000000000000002");

function hasTshark(): boolean {
  try {
    return new Deno.Command("tshark", { args: ["-v"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

function tcpPacket(src: Uint8Array, dst: Uint8Array, repr: TcpRepr, data: Uint8Array) {
  const hl = src.length === 4 ? 20 : 40;
  const len = tcpHeaderLength(repr) + data.length;
  const out = new Uint8Array(hl + len);
  emitIpHeader({ src, dst, protocol: IpProtocol.Tcp, ttl: 64, payloadLength: len }, out);
  emitTcp(repr, data, src, dst, out, hl);
  return out;
}

function udpPacket(src: Uint8Array, dst: Uint8Array, data: Uint8Array) {
  const hl = src.length === 4 ? 20 : 40;
  const out = new Uint8Array(hl + 8 + data.length);
  emitIpHeader(
    { src, dst, protocol: IpProtocol.Udp, ttl: 64, payloadLength: 8 + data.length },
    out,
  );
  emitUdp({ srcPort: 40000, dstPort: 53 }, data, src, dst, out, hl);
  return out;
}

const FIELDS = [
  "frame.number",
  "ip.checksum.status",
  "tcp.checksum.status",
  "udp.checksum.status",
  "icmp.checksum.status",
  "icmpv6.checksum.status",
  "tcp.options.mss_val",
  "tcp.options.wscale.shift",
  "tcp.options.sack_perm",
  "tcp.options.timestamp.tsval",
  "tcp.options.sack_le",
  "tcp.options.sack_re",
  "tcp.options.sack.count",
  "icmp.type",
  "icmp.code",
  "icmpv6.type",
  "icmpv6.code",
  "icmpv6.mtu",
  "icmp.mtu",
  "_ws.malformed",
];

Deno.test({
  name: "tshark: decodes what we emit, every checksum good",
  ignore: !hasTshark(),
  fn() {
    const dns = fromHex("abcd01000001000000000000076578616d706c6503636f6d0000010001");
    const syn: TcpRepr = {
      srcPort: 40000,
      dstPort: 8080,
      seq: 123456789,
      ack: 0,
      flags: TcpFlags.SYN,
      window: 64240,
      mss: 1460,
      windowScale: 7,
      sackPermitted: true,
      hasTimestamps: true,
      tsVal: 1000,
      tsEcr: 0,
    };
    const data: TcpRepr = {
      srcPort: 40000,
      dstPort: 8080,
      seq: 123456790,
      ack: 99,
      flags: TcpFlags.ACK | TcpFlags.PSH,
      window: 501,
      hasTimestamps: true,
      tsVal: 1001,
      tsEcr: 5,
      sackCount: 2,
      sackBlocks: [200, 300, 400, 500],
    };
    const pkts: Uint8Array[] = [
      tcpPacket(A4, B4, syn, new Uint8Array(0)), // 1
      tcpPacket(A4, B4, data, new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")), // 2
      tcpPacket(A6, B6, { ...syn, hasTimestamps: false }, new Uint8Array(0)), // 3
      udpPacket(A4, B4, dns), // 4
      udpPacket(A6, B6, dns), // 5
    ];
    const big6 = udpPacket(A6, B6, new Uint8Array(1400));
    const err = (p: Uint8Array, k: IcmpErrorKind, mtu?: number) => {
      const out = new Uint8Array(1280);
      const n = buildIcmpError(p, k, out, { mtu });
      assert(typeof n === "number", `${k}`);
      return out.slice(0, n);
    };
    pkts.push(err(pkts[3], IcmpErrorKind.PortUnreachable)); // 6
    pkts.push(err(pkts[3], IcmpErrorKind.PacketTooBig, 1400)); // 7
    pkts.push(err(pkts[4], IcmpErrorKind.PortUnreachable)); // 8
    pkts.push(err(big6, IcmpErrorKind.PacketTooBig, 1280)); // 9
    pkts.push(err(pkts[0], IcmpErrorKind.TimeExceeded)); // 10
    // Echo replies to the kernel's echo requests, and reassembled kernel fragments.
    for (const f of ["udp_icmp.pcap", "frag.pcap"]) {
      const r = new Reassembler();
      for (const p of readFixture(f)) {
        const ip = p.ip && parseIp(p.ip);
        if (!ip || typeof ip === "string") continue;
        const whole = ip.version === 4 ? r.push(ip.v4, 0) : r.pushIpv6(ip.v6, 0);
        if (!(whole instanceof Uint8Array)) continue;
        const out = new Uint8Array(whole.length);
        const n = buildEchoReply(whole, out);
        if (typeof n === "number") pkts.push(out.slice(0, n));
        if (f === "frag.pcap") pkts.push(whole);
      }
    }
    assertEquals(pkts.length, 10 + 2 + 2 + 4);
    const dir = Deno.makeTempDirSync({ prefix: "ostp-netstack-" });
    try {
      const file = `${dir}/emitted.pcap`;
      Deno.writeFileSync(file, writePcap(pkts));
      const r = new Deno.Command("tshark", {
        args: [
          "-r",
          file,
          "-o",
          "ip.check_checksum:TRUE",
          "-o",
          "tcp.check_checksum:TRUE",
          "-o",
          "udp.check_checksum:TRUE",
          "-T",
          "fields",
          "-E",
          "separator=|",
          ...FIELDS.flatMap((f) => ["-e", f]),
        ],
        stdout: "piped",
        stderr: "piped",
      }).outputSync();
      const text = new TextDecoder().decode(r.stdout);
      assert(r.success, new TextDecoder().decode(r.stderr));
      const rows = text.trim().split("\n").map((l) => {
        const v = l.split("|");
        return Object.fromEntries(FIELDS.map((f, i) => [f, v[i] ?? ""]));
      });
      assertEquals(rows.length, pkts.length);
      for (const row of rows) {
        const frame = Number(row["frame.number"]);
        const isError = frame >= 6 && frame <= 10;
        for (const f of FIELDS.filter((f) => f.endsWith("checksum.status"))) {
          // 0 bad, 1 good, 2 unverified: only a quote cut short (inside an ICMP error) may
          // be unverifiable; our own headers must all be good.
          row[f].split(",").filter((s) => s !== "").forEach((s, i) => {
            const ok = s === "1" ||
              (isError && s === "2" && (i > 0 || f.startsWith("udp") || f.startsWith("tcp")));
            assert(ok, `frame ${frame} ${f} = ${row[f]}`);
          });
        }
        assertEquals(row["_ws.malformed"], "", `frame ${row["frame.number"]} malformed`);
      }
      const at = (n: number) => rows[n - 1];
      assertEquals(
        [
          at(1)["tcp.options.mss_val"],
          at(1)["tcp.options.wscale.shift"],
          at(1)["tcp.options.timestamp.tsval"],
        ],
        ["1460", "7", "1000"],
      );
      assert(at(1)["tcp.options.sack_perm"] !== "", "SACK-permitted decoded");
      // tshark shows SACK edges relative to the connection's start: check their shape.
      assertEquals(at(2)["tcp.options.sack.count"], "2");
      const le = at(2)["tcp.options.sack_le"].split(",").map(Number);
      const re = at(2)["tcp.options.sack_re"].split(",").map(Number);
      assertEquals([re[0] - le[0], re[1] - le[1], le[1] - le[0]], [100, 100, 200]);
      assertEquals(at(3)["tcp.options.mss_val"], "1460");
      assertEquals([at(6)["icmp.type"].split(",")[0], at(6)["icmp.code"].split(",")[0]], [
        "3",
        "3",
      ]);
      assertEquals(at(7)["icmp.mtu"], "1400");
      assertEquals([at(8)["icmpv6.type"], at(8)["icmpv6.code"]], ["1", "4"]);
      assertEquals(at(9)["icmpv6.mtu"], "1280");
      assertEquals(at(10)["icmp.type"].split(",")[0], "11");
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
