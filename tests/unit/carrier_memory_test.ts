import { carrierConformance } from "../conformance/carrier.ts";
import { MemoryNetwork } from "../../shared/carrier/memory.ts";

carrierConformance("memory carrier", () => {
  const net = new MemoryNetwork();
  const listener = net.listen();
  return Promise.resolve({
    listener,
    dialer: net.dialer(),
    server: listener.local,
    mtu: 1350,
    sendStranger(bytes: Uint8Array) {
      net.inject(1, listener.local.port, bytes);
      return Promise.resolve();
    },
    close: () => Promise.resolve(),
  });
});
