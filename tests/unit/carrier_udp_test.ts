import { carrierConformance } from "../conformance/carrier.ts";
import { UdpDialer, UdpListener } from "../../shared/carrier/udp.ts";
import { openUdp } from "../../shared/net/datagram.ts";
import "../../ffi/udp_linux.ts";

for (const impl of ["deno", "ffi"] as const) {
  carrierConformance(`udp carrier (${impl})`, () => {
    const listener = UdpListener.open("127.0.0.1", 0, { impl });
    const stranger = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    return Promise.resolve({
      listener,
      dialer: new UdpDialer((host, port) => openUdp(host, port, { impl })),
      server: { transport: "udp", hostname: "127.0.0.1", port: listener.local.port },
      mtu: 1350,
      burst: impl === "deno" ? 64 : 256,
      async sendStranger(bytes: Uint8Array) {
        if (bytes.length > 0) {
          await stranger.send(bytes, listener.local);
        }
      },
      close() {
        stranger.close();
        return Promise.resolve();
      },
    });
  }, { ignore: impl === "ffi" && Deno.build.os !== "linux" });
}
