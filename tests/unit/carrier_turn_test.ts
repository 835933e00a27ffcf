/**
 * The TURN carrier through a real coturn on loopback (Debian's package;
 * skipped when it is not installed): the carrier conformance suite, with
 * the UDP listener as the ostp server and the link's datagrams relayed by
 * coturn as ChannelData — reaching coturn over UDP, TCP and TLS.
 */
import { carrierConformance } from "../conformance/carrier.ts";
import { UdpListener } from "../../shared/carrier/udp.ts";
import { TurnDialer } from "../../shared/carrier/turn.ts";
import { DenoUdpSocket, openUdp } from "../../shared/net/datagram.ts";
import { freePort } from "../support/daemons.ts";
import { makeTestCerts, type TestCerts } from "../support/certs.ts";
import "../../ffi/udp_linux.ts";

async function hasCoturn(): Promise<boolean> {
  try {
    await new Deno.Command("turnserver", { args: ["-h"], stdout: "null", stderr: "null" }).output();
    return true;
  } catch {
    return false;
  }
}

const enabled = Deno.build.os === "linux" && await hasCoturn();
if (!enabled) console.log("SKIPPED turn carrier conformance: needs turnserver (coturn)");

/** Starts coturn on loopback (TLS too with `certs`); resolves once it answers. */
async function coturn(
  certs?: TestCerts,
): Promise<{ port: number; tlsPort: number; stop: () => Promise<void> }> {
  const port = freePort("udp");
  const tlsPort = freePort("tcp");
  const min = 20000 + Math.floor(Math.random() * 400) * 100;
  const db = await Deno.makeTempFile({ suffix: ".db" });
  const proc = new Deno.Command("turnserver", {
    args: [
      "-n",
      "--listening-ip",
      "127.0.0.1",
      "--listening-port",
      String(port),
      "--relay-ip",
      "127.0.0.1",
      "--min-port",
      String(min),
      "--max-port",
      String(min + 99),
      "--lt-cred-mech",
      "--user",
      "conf:conf-pw",
      "--realm",
      "ostp.test",
      "--allow-loopback-peers",
      ...(certs
        ? ["--tls-listening-port", String(tlsPort), "--cert", certs.cert, "--pkey", certs.key]
        : ["--no-tls"]),
      "--no-dtls",
      "--no-cli",
      "--userdb",
      db,
      "--log-file",
      "stdout",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  // Ready when a Binding request is answered.
  const probe = new DenoUdpSocket("127.0.0.1", 0);
  const req = new Uint8Array([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, ...new Uint8Array(12).fill(1)]);
  let answered = false;
  const running = probe.run(() => (answered = true));
  for (let i = 0; i < 100 && !answered; i++) {
    probe.send(req, { transport: "udp", hostname: "127.0.0.1", port });
    await new Promise((r) => setTimeout(r, 50));
  }
  probe.close();
  await running;
  if (certs) {
    for (let i = 0; i < 100; i++) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port: tlsPort })).close();
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
  return {
    port,
    tlsPort,
    async stop() {
      try {
        proc.kill("SIGTERM");
      } catch {
        // gone
      }
      await proc.status;
      await Deno.remove(db).catch(() => {});
    },
  };
}

for (const transport of ["udp", "tcp", "tls"] as const) {
  carrierConformance(`turn carrier over ${transport} (coturn)`, async () => {
    const dir = transport === "tls" ? await Deno.makeTempDir() : null;
    const certs = dir ? await makeTestCerts(dir, ["turn.test"]) : undefined;
    const turn = await coturn(certs);
    const listener = UdpListener.open("127.0.0.1", 0);
    const stranger = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    return {
      listener,
      dialer: new TurnDialer({
        server: { host: "127.0.0.1", port: transport === "tls" ? turn.tlsPort : turn.port },
        credentials: { username: "conf", password: "conf-pw" },
        transport,
        ...(certs ? { serverName: "turn.test", caCerts: [await Deno.readTextFile(certs.ca)] } : {}),
        openSocket: (h, p) => openUdp(h, p),
      }),
      server: { transport: "udp", hostname: "127.0.0.1", port: listener.local.port },
      mtu: 1346 - (transport === "udp" ? 0 : 40),
      linkKind: "turn",
      // coturn relays one datagram at a time through default-sized socket buffers: a burst of
      // 64 full datagrams (both ways) overflows them now and then, 16 does not.
      burst: 16,
      async sendStranger(bytes: Uint8Array) {
        if (bytes.length > 0) await stranger.send(bytes, listener.local);
      },
      async close() {
        stranger.close();
        await turn.stop();
        if (dir) await Deno.remove(dir, { recursive: true });
      },
    };
  }, { ignore: !enabled });
}
