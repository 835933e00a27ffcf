/**
 * The layer-3 hub's addresses: the server takes the subnet's first host
 * address, the rest (or a configured range) is the pool. Each session that
 * asks for layer 3 gets one IPv4 address — a user's fixed one, or one from
 * the pool — and, when an IPv6 subnet is configured, the IPv6 address with the
 * same host number (10.77.0.5 ↔ fd77::5).
 *
 * Never the same address to two live sessions. A client is known by its
 * owner (the access key or user) and its instance (a random id the client
 * process picks): the same instance asking again — a reconnection, or a new
 * session while the old one has not yet timed out — takes its address over;
 * another instance asking for an address held live is refused with a reason.
 * An owner gets back the pool address it had last (sticky) while it is free.
 * Pure bookkeeping: no I/O, no clock.
 * @module
 */

import { parseIpInto } from "../net/cidr.ts";

/** Where the addresses come from. */
export interface AddressPoolConfig {
  /** IPv4 subnet, e.g. "10.77.0.0/24" (a /30 at the smallest). */
  subnet: string;
  /** IPv6 subnet, e.g. "fd77::/64": each lease gets the IPv6 address with its host number. */
  subnet6?: string;
  /** The server's own address (default: the subnet's first host address). */
  server?: string;
  /** First and last address handed from the pool (default: every host address but the server's). */
  range?: { first: string; last: string };
  /** Addresses never handed from the pool (users' fixed addresses). */
  reserved?: readonly string[];
}

/** The addresses of one lease. */
export interface Lease {
  /** IPv4 address. */
  v4: string;
  /** IPv6 address, when an IPv6 subnet is configured. */
  v6?: string;
  /** Prefix length of the IPv4 subnet (for the client's TUN). */
  prefix: number;
  /** Prefix length of the IPv6 subnet. */
  prefix6?: number;
}

/** Who asks for an address. */
export interface LeaseRequest {
  /** The session that will carry the packets. */
  session: number;
  /** The access key or user the session authenticated as. */
  owner: string;
  /** The client process's random instance id. */
  instance: string;
  /** The user's fixed address, if the user record has one. */
  fixed?: string;
}

/** The answer to a {@link LeaseRequest}. */
export type LeaseResult =
  | {
    ok: true;
    lease: Lease; /** A live session whose lease this one took over. */
    replaced?: number;
  }
  | { ok: false; reason: string };

interface Held {
  session: number;
  owner: string;
  instance: string;
  v4: number;
}

/** A malformed pool configuration. */
export class AddressPoolError extends Error {
  /** Creates the error with a message for a person. */
  constructor(message: string) {
    super(message);
    this.name = "AddressPoolError";
  }
}

function v4(text: string, what: string): number {
  const b = new Uint8Array(16);
  if (parseIpInto(text, b) !== 4) {
    throw new AddressPoolError(`${what}: ${text} is not an IPv4 address`);
  }
  return ((b[12] << 24) >>> 0) + (b[13] << 16) + (b[14] << 8) + b[15];
}

function fmt4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

function fmt6(base: Uint8Array, host: number): string {
  const b = base.slice();
  // The host number goes into the last 32 bits (the subnet is /64 or larger: room to spare).
  b[12] |= host >>> 24;
  b[13] |= (host >>> 16) & 255;
  b[14] |= (host >>> 8) & 255;
  b[15] |= host & 255;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] << 8) | b[i + 1]).toString(16));
  // RFC 5952: the longest run of zero groups (two or more) becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

/** The layer-3 address book of one server (see the module doc). */
export class AddressPool {
  /** The server's own lease (its TUN's addresses). */
  readonly server: Lease;
  readonly #network: number;
  readonly #prefix: number;
  readonly #first: number;
  readonly #last: number;
  readonly #base6: Uint8Array | null;
  readonly #prefix6: number | undefined;
  readonly #reserved = new Set<number>();
  readonly #byAddress = new Map<number, Held>();
  readonly #bySession = new Map<number, Held>();
  /** Owner → the pool address it had last. */
  readonly #sticky = new Map<string, number>();

  /** @throws {AddressPoolError} for a subnet, range or address that does not fit. */
  constructor(cfg: AddressPoolConfig) {
    const m = cfg.subnet.match(/^([0-9.]+)\/(\d{1,2})$/);
    const prefix = m ? Number(m[2]) : -1;
    if (!m || prefix < 8 || prefix > 30) {
      throw new AddressPoolError(
        `subnet: expected an IPv4 "address/prefix" from /8 to /30, e.g. 10.77.0.0/24`,
      );
    }
    const net = v4(m[1], "subnet");
    const size = 2 ** (32 - prefix);
    if (net % size !== 0) {
      throw new AddressPoolError(
        `subnet: host bits are set past /${prefix} (the network is ${
          fmt4(net - (net % size))
        }/${prefix})`,
      );
    }
    this.#network = net;
    this.#prefix = prefix;
    const broadcast = net + size - 1;
    const inside = (a: number) => a > net && a < broadcast;
    const server = cfg.server === undefined ? net + 1 : v4(cfg.server, "server address");
    if (!inside(server)) {
      throw new AddressPoolError(
        `server address ${fmt4(server)} is not a host address of ${cfg.subnet}`,
      );
    }
    this.#first = cfg.range ? v4(cfg.range.first, "range.first") : net + 1;
    this.#last = cfg.range ? v4(cfg.range.last, "range.last") : broadcast - 1;
    if (!inside(this.#first) || !inside(this.#last) || this.#first > this.#last) {
      throw new AddressPoolError(
        `range: ${fmt4(this.#first)}..${fmt4(this.#last)} is not inside ${cfg.subnet}`,
      );
    }
    this.#reserved.add(server);
    for (const r of cfg.reserved ?? []) {
      const a = v4(r, "fixed address");
      if (!inside(a)) {
        throw new AddressPoolError(`fixed address ${r} is not a host address of ${cfg.subnet}`);
      }
      if (a === server) throw new AddressPoolError(`fixed address ${r} is the server's own`);
      this.#reserved.add(a);
    }
    if (cfg.subnet6 !== undefined) {
      const m6 = cfg.subnet6.match(/^([0-9a-fA-F:]+)\/(\d{1,3})$/);
      const b = new Uint8Array(16);
      const p6 = m6 ? Number(m6[2]) : -1;
      if (!m6 || parseIpInto(m6[1], b) !== 6 || p6 < 16 || p6 > 96) {
        throw new AddressPoolError(
          'subnet6: expected an IPv6 "address/prefix" from /16 to /96, e.g. fd77::/64',
        );
      }
      for (let bit = p6; bit < 128; bit++) {
        if (b[bit >> 3] & (0x80 >> (bit & 7))) {
          throw new AddressPoolError(`subnet6: host bits are set past /${p6}`);
        }
      }
      this.#base6 = b;
      this.#prefix6 = p6;
    } else {
      this.#base6 = null;
    }
    this.server = this.#leaseOf(server);
  }

  #leaseOf(a: number): Lease {
    const l: Lease = { v4: fmt4(a), prefix: this.#prefix };
    if (this.#base6) {
      l.v6 = fmt6(this.#base6, a - this.#network);
      l.prefix6 = this.#prefix6;
    }
    return l;
  }

  #take(req: LeaseRequest, a: number, replaced?: number): LeaseResult {
    const held: Held = { session: req.session, owner: req.owner, instance: req.instance, v4: a };
    this.#byAddress.set(a, held);
    this.#bySession.set(req.session, held);
    return replaced === undefined
      ? { ok: true, lease: this.#leaseOf(a) }
      : { ok: true, lease: this.#leaseOf(a), replaced };
  }

  /** Gives `req.session` an address, or says why not. */
  lease(req: LeaseRequest): LeaseResult {
    this.release(req.session);
    const same = (h: Held) => h.owner === req.owner && h.instance === req.instance;
    if (req.fixed !== undefined) {
      let a: number;
      try {
        a = v4(req.fixed, "fixed address");
      } catch (e) {
        return { ok: false, reason: (e as Error).message };
      }
      if (a <= this.#network || a >= this.#network + 2 ** (32 - this.#prefix) - 1) {
        return { ok: false, reason: `fixed address ${req.fixed} is outside the layer-3 subnet` };
      }
      if (a === v4(this.server.v4, "server")) {
        return { ok: false, reason: `fixed address ${req.fixed} is the server's own` };
      }
      const h = this.#byAddress.get(a);
      if (h && !same(h)) {
        return { ok: false, reason: `address ${req.fixed} is in use by another live session` };
      }
      if (h) this.#drop(h);
      return this.#take(req, a, h?.session);
    }
    // The same client instance again (reconnection, or a second session): its address.
    for (const h of this.#byAddress.values()) {
      if (same(h) && !this.#reserved.has(h.v4)) {
        this.#drop(h);
        return this.#take(req, h.v4, h.session);
      }
    }
    const sticky = this.#sticky.get(req.owner);
    if (sticky !== undefined && !this.#byAddress.has(sticky) && !this.#reserved.has(sticky)) {
      return this.#take(req, sticky);
    }
    // A free address no other owner had last, else any free address.
    const remembered = new Set(this.#sticky.values());
    for (const avoidRemembered of [true, false]) {
      for (let a = this.#first; a <= this.#last; a++) {
        if (this.#reserved.has(a) || this.#byAddress.has(a)) continue;
        if (avoidRemembered && remembered.has(a)) continue;
        this.#sticky.set(req.owner, a);
        return this.#take(req, a);
      }
    }
    return { ok: false, reason: "the layer-3 address pool is exhausted" };
  }

  #drop(h: Held): void {
    this.#byAddress.delete(h.v4);
    this.#bySession.delete(h.session);
  }

  /** Frees the address of `session` (it ended); nothing if it had none. */
  release(session: number): void {
    const h = this.#bySession.get(session);
    if (h) this.#drop(h);
  }

  /** The session holding IPv4 address `text`, if any. */
  holderOf(text: string): number | undefined {
    const b = new Uint8Array(16);
    if (parseIpInto(text, b) !== 4) return undefined;
    return this.#byAddress.get(((b[12] << 24) >>> 0) + (b[13] << 16) + (b[14] << 8) + b[15])
      ?.session;
  }

  /** Live leases. */
  get leased(): number {
    return this.#byAddress.size;
  }
}
