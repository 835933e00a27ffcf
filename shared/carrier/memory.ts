/**
 * An in-memory carrier for tests: listeners and links on a {@link MemoryNetwork},
 * datagrams delivered in batches on a later task (as a socket would), with an
 * optional drop rule. Like `duplexPair()` in `shared/pipe.ts` and
 * wireguard-go's `conn/bindtest`.
 * @module
 */

import type {
  CarrierDialer,
  CarrierLink,
  CarrierListener,
  Endpoint,
  OnEndpointDatagram,
} from "./carrier.ts";

/** Largest datagram the memory carrier takes. */
export const MEMORY_MAX_DATAGRAM = 65507;

class MemoryEndpoint implements Endpoint {
  readonly carrier = "memory";
  readonly key: string;
  readonly address: Deno.NetAddr;
  constructor(port: number) {
    this.address = { transport: "udp", hostname: "127.0.0.1", port };
    this.key = `memory|${port}`;
  }
}

/** Something on the network that receives datagrams. */
interface Node {
  deliver(data: Uint8Array, from: MemoryEndpoint): void;
}

/** A little network of memory listeners and links. */
export class MemoryNetwork {
  private nextPort = 40000;
  private readonly nodes = new Map<number, Node>();
  /** Datagrams delivered so far. */
  delivered = 0;
  /** Datagrams the drop rule dropped. */
  dropped = 0;

  /** `drop` decides per datagram (in send order) whether the network loses it. */
  constructor(private readonly drop: (data: Uint8Array) => boolean = () => false) {}

  /** A listener on `port` (default: a fresh one). */
  listen(port = this.nextPort++): MemoryListener {
    if (this.nodes.has(port)) throw new Deno.errors.AddrInUse(`memory port ${port} in use`);
    const l = new MemoryListener(this, port);
    this.nodes.set(port, l);
    return l;
  }

  /** A dialer of links to listeners on this network. */
  dialer(): CarrierDialer {
    return {
      kind: "memory",
      dial: (server) => {
        const target = this.nodes.get(server.port);
        if (!(target instanceof MemoryListener)) {
          return Promise.reject(new Deno.errors.ConnectionRefused(`no listener on ${server.port}`));
        }
        const port = this.nextPort++;
        const link = new MemoryLink(this, port, server.port);
        this.nodes.set(port, link);
        return Promise.resolve(link);
      },
    };
  }

  /** Sends raw bytes to `port` as if from `fromPort` (a stranger, for tests). */
  inject(fromPort: number, port: number, data: Uint8Array): void {
    this.transmit(new MemoryEndpoint(fromPort), port, data.slice());
  }

  /** @internal */
  transmit(from: MemoryEndpoint, port: number, data: Uint8Array): void {
    if (this.drop(data)) {
      this.dropped++;
      return;
    }
    const node = this.nodes.get(port);
    if (!node) return;
    this.delivered++;
    node.deliver(data, from);
  }

  /** @internal */
  unbind(port: number): void {
    this.nodes.delete(port);
  }
}

/** Common receive side: a queue drained on a later task, in batches. */
class Inbox {
  private queue: [Uint8Array, MemoryEndpoint][] = [];
  private scheduled = false;
  private handler: OnEndpointDatagram | null = null;
  private closed = false;
  private resolveRun: (() => void) | null = null;

  push(data: Uint8Array, from: MemoryEndpoint): void {
    if (this.closed) return;
    this.queue.push([data, from]);
    if (!this.scheduled && this.handler) {
      this.scheduled = true;
      setTimeout(() => this.drain(), 0);
    }
  }

  run(onDatagram: OnEndpointDatagram): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.handler = onDatagram;
    if (this.queue.length > 0 && !this.scheduled) {
      this.scheduled = true;
      setTimeout(() => this.drain(), 0);
    }
    return new Promise((resolve) => (this.resolveRun = resolve));
  }

  private drain(): void {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    for (const [data, from] of batch) {
      if (this.closed || !this.handler) return;
      this.handler(data, from);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.resolveRun?.();
  }
}

/** The memory carrier's server side. */
export class MemoryListener implements CarrierListener, Node {
  readonly kind = "memory";
  readonly overhead = 0;
  readonly reliable = false;
  readonly maxDatagram = MEMORY_MAX_DATAGRAM;
  readonly local: Deno.NetAddr;
  private readonly inbox = new Inbox();
  private readonly self: MemoryEndpoint;
  private outbox: [Uint8Array, number][] = [];
  private closed = false;

  constructor(private readonly net: MemoryNetwork, port: number) {
    this.local = { transport: "udp", hostname: "127.0.0.1", port };
    this.self = new MemoryEndpoint(port);
  }

  deliver(data: Uint8Array, from: MemoryEndpoint): void {
    this.inbox.push(data, from);
  }

  run(onDatagram: OnEndpointDatagram): Promise<void> {
    return this.inbox.run(onDatagram);
  }

  send(data: Uint8Array, to: Endpoint): void {
    if (this.closed || to.carrier !== "memory" || data.length > this.maxDatagram) return;
    if (this.outbox.length === 0) queueMicrotask(() => this.flush());
    this.outbox.push([data.slice(), to.address.port]);
  }

  flush(): void {
    const out = this.outbox;
    this.outbox = [];
    for (const [d, port] of out) this.net.transmit(this.self, port, d);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.outbox = [];
    this.net.unbind(this.local.port);
    this.inbox.close();
  }
}

/** The memory carrier's client side. */
export class MemoryLink implements CarrierLink, Node {
  readonly kind = "memory";
  readonly overhead = 0;
  readonly reliable = false;
  readonly maxDatagram = MEMORY_MAX_DATAGRAM;
  private readonly inbox = new Inbox();
  private readonly self: MemoryEndpoint;
  private outbox: Uint8Array[] = [];
  private closed = false;

  constructor(
    private readonly net: MemoryNetwork,
    readonly localPort: number,
    readonly server: number,
  ) {
    this.self = new MemoryEndpoint(localPort);
  }

  get local(): string {
    return `memory ${this.localPort}`;
  }

  deliver(data: Uint8Array, from: MemoryEndpoint): void {
    if (from.address.port === this.server) this.inbox.push(data, from);
  }

  run(onDatagram: (data: Uint8Array) => void): Promise<void> {
    return this.inbox.run((d) => onDatagram(d));
  }

  send(data: Uint8Array): void {
    if (this.closed || data.length > this.maxDatagram) return;
    if (this.outbox.length === 0) queueMicrotask(() => this.flush());
    this.outbox.push(data.slice());
  }

  flush(): void {
    const out = this.outbox;
    this.outbox = [];
    for (const d of out) this.net.transmit(this.self, this.server, d);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.outbox = [];
    this.net.unbind(this.localPort);
    this.inbox.close();
  }
}
