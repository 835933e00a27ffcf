/**
 * NAT traversal end to end (docs/nat.md), with coturn as the STUN/TURN
 * server in its own namespace and an nftables masquerade as the NAT
 * (tests/support/nat_bed.ts):
 * - STUN: the client learns its public mapping through the NAT on the
 *   session's socket, again after a hop, reports a rebinding when the NAT
 *   forgets it; a forged Binding response from a third address changes
 *   nothing.
 * - nat-check: port-restricted cone for a plain masquerade, symmetric for
 *   `masquerade random`.
 * - mappings through the NAT: an IN mapping publishes the client's service on
 *   the server's address; an OUT UDP mapping asks coturn from the server's side.
 * - TURN: with direct UDP to the server dropped, 32 MiB through the proxy
 *   over an allocation, byte-exact; the server sees the relay's address;
 *   a 20 s allocation refreshed across a longer run; forged ChannelData from
 *   a third address dropped; exit deallocates (coturn's log); a wrong
 *   password fails naming TURN authentication.
 * @module
 */
import { assert, assertEquals } from "../support/assert.ts";
import { payload, sha256Hex } from "../support/daemons.ts";
import type { Daemon } from "../support/daemons.ts";
import { canUseNetns } from "../support/netns.ts";
import { NAT_ADDR, NatBed, startNatTunnel, TURN_USER } from "../support/nat_bed.ts";
import { spawnDenoIn } from "../support/netns.ts";
import { Attr, Method, StunWriter, writeChannelData } from "../../shared/stun/message.ts";
import { makeTestCerts } from "../support/certs.ts";

const MiB = 1024 * 1024;
const enabled = await canUseNetns() && await hasCoturn();
if (!enabled) console.log("SKIPPED netns NAT/TURN tests: need root, ip netns and turnserver");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function hasCoturn(): Promise<boolean> {
  try {
    const r = await new Deno.Command("turnserver", { args: ["-h"], stdout: "null", stderr: "null" })
      .output();
    return r.code === 0 || r.code === 1;
  } catch {
    return false;
  }
}

/**
 * Registers a test on a fresh NAT testbed with coturn running and a state
 * directory; everything is stopped and removed even when it fails.
 */
function natTest(
  name: string,
  opts: { symmetric?: boolean; coturn?: string[]; tls?: boolean },
  fn: (bed: NatBed, dir: string, daemons: Daemon[]) => Promise<void>,
): void {
  Deno.test({
    name: `netns nat: ${name}`,
    ignore: !enabled,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const bed = await NatBed.create({ symmetric: opts.symmetric });
      const dir = await Deno.makeTempDir();
      const daemons: Daemon[] = [];
      try {
        const certs = opts.tls ? await makeTestCerts(dir, ["turn.test"]) : undefined;
        await bed.startCoturn(opts.coturn ?? [], certs);
        await fn(bed, dir, daemons);
      } finally {
        for (const d of daemons.reverse()) await d.stop().catch(() => {});
        await bed.close();
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

async function download(bed: NatBed, size: number, seed: number, out: string): Promise<void> {
  const r = await bed.exec(bed.client, "curl", [
    "-sS",
    "-m",
    "120",
    "--socks5-hostname",
    "127.0.0.1:1088",
    "-o",
    out,
    `http://127.0.0.1:8080/bytes/${size}?seed=${seed}`,
  ]);
  assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
  assertEquals(await sha256Hex(await Deno.readFile(out)), await sha256Hex(payload(size, seed)));
}

/** Sends `data` from the NAT router's LAN address (a third party) to the client's UDP `port`. */
async function forge(bed: NatBed, port: number, data: Uint8Array, fromPort = 3478) {
  const hex = Array.from(data, (b) => b.toString(16).padStart(2, "0")).join("");
  const script =
    `const s = Deno.listenDatagram({ transport: "udp", hostname: "${NAT_ADDR.natLan}", ` +
    `port: ${fromPort} }); const h = "${hex}"; const b = new Uint8Array(h.length / 2); ` +
    `for (let i = 0; i < b.length; i++) b[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16); ` +
    `for (let i = 0; i < 5; i++) await s.send(b, { transport: "udp", hostname: ` +
    `"${NAT_ADDR.client}", port: ${port} }); s.close();`;
  const r = await bed.exec(bed.nat, Deno.execPath(), [
    "eval",
    "--unstable-net",
    script,
  ]);
  assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
}

async function session0(client: Daemon): Promise<Record<string, any>> {
  const st = await client.statsDump();
  return st.sessions[0];
}

natTest("STUN: the mapping through the NAT, again after a hop, a rebinding reported", {}, async (
  bed,
  dir,
  daemons,
) => {
  const { client } = await startNatTunnel(bed, dir, daemons, {
    stun: [`${NAT_ADDR.turn}:3478`],
    stunInterval: 5,
  });
  const m = await client.waitFor(/udp (\d+) is seen as (\S+) by 10\.77\.1\.2:3478/, 15_000);
  assert(m[2].startsWith(`${NAT_ADDR.natPublic}:`), `mapped through the NAT: ${m[2]}`);
  const s0 = await session0(client);
  assertEquals(String(s0.localPort), m[1], "on the session's own socket");
  assertEquals(s0.carrierCounters?.mapped, m[2]);
  // A forged Binding response (right shape, guessed transaction id) from a third address.
  const forged = new StunWriter(
    Method.binding,
    "success",
    crypto.getRandomValues(new Uint8Array(12)),
  )
    .address(Attr.xorMappedAddress, { transport: "udp", hostname: "6.6.6.6", port: 666 }, true)
    .finish({ fingerprint: true });
  await forge(bed, s0.localPort, forged);
  await sleep(6000); // past one check interval
  assertEquals(
    (await session0(client)).carrierCounters?.mapped,
    m[2],
    "the forgery changed nothing",
  );
  assertEquals(client.count(/6\.6\.6\.6/), 0);
  await download(bed, 4 * MiB, 3, `${dir}/a.bin`);
  // A socket hop: the new socket learns its own mapping.
  const before = client.output.length;
  await client.control({ cmd: "hop" });
  const m2 = await client.waitFor(/udp (\d+) is seen as (\S+) by/, 15_000, before);
  assert(m2[1] !== m[1], "a new local port after the hop");
  // The NAT forgets every mapping and now hands out random ports: the next check sees a rebinding.
  await bed.nft("flush chain ip nat post");
  await bed.nft(
    `add rule ip nat post ip saddr 192.168.77.0/24 oifname != "nl${bed.id}" masquerade random`,
  );
  await bed.flushNat();
  await client.waitFor(/NAT rebinding: udp \d+ is now seen as \S+ \(was \S+\)/, 20_000);
  await download(bed, 4 * MiB, 4, `${dir}/b.bin`);
});

/** `nat-check` run in the client's namespace. */
function natCheckIn(bed: NatBed, ...args: string[]): Promise<Deno.CommandOutput> {
  return bed.exec(bed.client, Deno.execPath(), [
    "run",
    "-A",
    new URL("../../client/main.ts", import.meta.url).pathname,
    "nat-check",
    `${NAT_ADDR.turn}:3478`,
    ...args,
  ]);
}

natTest("nat-check: a plain masquerade is a port-restricted cone", {}, async (bed) => {
  const r = await natCheckIn(bed, "--json");
  assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
  const rep = JSON.parse(new TextDecoder().decode(r.stdout));
  assertEquals(rep.otherAddress, `${NAT_ADDR.turnAlt}:3479`);
  assert(String(rep.mapped).startsWith(`${NAT_ADDR.natPublic}:`));
  assertEquals(rep.mapping, "endpoint-independent");
  assertEquals(rep.filtering, "address-and-port-dependent");
  assertEquals(rep.type, "port-restricted cone");
});

natTest("nat-check: masquerade random is a symmetric NAT", { symmetric: true }, async (bed) => {
  const r = await natCheckIn(bed);
  assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
  const text = new TextDecoder().decode(r.stdout);
  assert(/mapping\s+address- and port-dependent/.test(text), text);
  assert(/NAT type\s+symmetric/.test(text), text);
});

natTest(
  "TURN: 32 MiB byte-exact with direct UDP dropped, refreshed past a 20 s lifetime, dealloc on exit",
  { coturn: ["--max-allocate-lifetime=20", "--stale-nonce=15"] },
  async (bed, dir, daemons) => {
    await bed.blockDirectUdp();
    await Deno.writeTextFile(`${dir}/turn.pw`, `${TURN_USER.password}\n`, { mode: 0o600 });
    const started = performance.now();
    const { client } = await startNatTunnel(bed, dir, daemons, {
      turn: {
        server: `${NAT_ADDR.turn}:3478`,
        username: TURN_USER.username,
        passwordFile: "turn.pw",
      },
    });
    const alloc = await client.waitFor(/TURN relay (\S+) allocated for (\d+) s/);
    assert(alloc[1].startsWith(`${NAT_ADDR.turn}:`), `relay in the TURN namespace: ${alloc[1]}`);
    assertEquals(alloc[2], "20");
    // What the server sees: the relay's address, never the NAT's.
    const dump = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        bed.server,
        "tcpdump",
        "-n",
        "-l",
        "-i",
        "any",
        "-c",
        "40",
        "udp",
        "port",
        "8443",
      ],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    await sleep(300);
    await download(bed, 32 * MiB, 7, `${dir}/t.bin`);
    const seen = new TextDecoder().decode((await dump.output()).stdout);
    assert(seen.includes(`${NAT_ADDR.turn}.`), `the server sees the relay: ${seen.slice(0, 400)}`);
    assert(!seen.includes(NAT_ADDR.natPublic), "and never the NAT's address");
    const s0 = await session0(client);
    assertEquals(s0.carrier, "turn");
    // Forged ChannelData and a forged Binding response from a third address: dropped.
    const cd = new Uint8Array(64);
    const n = writeChannelData(0x4000, crypto.getRandomValues(new Uint8Array(40)), cd);
    await forge(bed, s0.localPort, cd.subarray(0, n));
    const forgedStun = new StunWriter(
      Method.binding,
      "success",
      crypto.getRandomValues(new Uint8Array(12)),
    )
      .finish();
    await forge(bed, s0.localPort, forgedStun);
    await sleep(500);
    const after = await session0(client);
    assert(Number(after.carrierCounters.foreign) >= 10, JSON.stringify(after.carrierCounters));
    assertEquals(after.carrierCounters.relayed, alloc[1], "the same allocation");
    // Past the 20 s lifetime: refreshed, and the path still carries the session.
    const wait = 26_000 - (performance.now() - started);
    if (wait > 0) await sleep(wait);
    const late = await session0(client);
    assert(Number(late.carrierCounters.refreshes) >= 1, JSON.stringify(late.carrierCounters));
    assertEquals(late.carrierCounters.relayed, alloc[1], "still the first allocation");
    await download(bed, 4 * MiB, 8, `${dir}/t2.bin`);
    assertEquals(client.count(/TURN .*lost|connecting to/), 1, "one connect, no allocation lost");
    // Exit deallocates: coturn logs the Refresh with lifetime 0.
    const coturn = bed.coturnDaemon!;
    const mark = coturn.output.length;
    await client.stop();
    await coturn.waitFor(/refreshed, realm=<ostp\.test>, username=<ostp>, lifetime=0/, 5000, mark);
    assertEquals(client.count(/relay-secret-1/), 0, "the password is never logged");
  },
);

natTest("TURN: a wrong password fails with an error naming TURN authentication", {}, async (
  bed,
  dir,
  daemons,
) => {
  await bed.blockDirectUdp();
  const { client } = await startNatTunnel(
    bed,
    dir,
    daemons,
    {
      turn: { server: `${NAT_ADDR.turn}:3478`, username: TURN_USER.username, password: "not-it" },
    },
    [],
    false,
  );
  await client.waitFor(
    /TURN authentication failed \(401 Unauthorized\): check turn\.username/,
    20_000,
  );
  assertEquals(client.count(/connected to/), 0);
  assertEquals(client.count(/not-it/), 0, "the password is never logged");
});

natTest("TURN over TCP and over TLS when no UDP leaves the LAN", { tls: true }, async (
  bed,
  dir,
  daemons,
) => {
  await bed.blockAllUdp();
  for (const transport of ["tcp", "tls"] as const) {
    const { client } = await startNatTunnel(bed, dir, daemons, {
      turn: {
        server: `${NAT_ADDR.turn}:${transport === "tls" ? 5349 : 3478}`,
        username: TURN_USER.username,
        password: TURN_USER.password,
        transport,
        ...(transport === "tls" ? { serverName: "turn.test", ca: `${dir}/ca.pem` } : {}),
      },
    });
    await client.waitFor(/TURN relay 10\.77\.1\.2:\d+ allocated/);
    await download(bed, 16 * MiB, transport === "tls" ? 12 : 11, `${dir}/${transport}.bin`);
    const s0 = await session0(client);
    assertEquals(s0.carrier, "turn");
    assertEquals(s0.carrierCounters.transport, transport);
    for (const d of daemons.splice(0)) await d.stop();
  }
});

natTest(
  "TURN: coturn restarted → the session moves to a new allocation, no new handshake",
  {},
  async (
    bed,
    dir,
    daemons,
  ) => {
    await bed.blockDirectUdp();
    const { client } = await startNatTunnel(bed, dir, daemons, {
      turn: {
        server: `${NAT_ADDR.turn}:3478`,
        username: TURN_USER.username,
        password: TURN_USER.password,
      },
    }, ["--keepalive", "1"]);
    await client.waitFor(/TURN relay (\S+) allocated/);
    await download(bed, 4 * MiB, 21, `${dir}/r1.bin`);
    const mark = client.output.length;
    await bed.restartCoturn();
    // The old allocation is gone with coturn: the silent session gets a new one and moves there.
    await client.waitFor(/TURN allocation lost/, 30_000, mark);
    await client.waitFor(/TURN relay (\S+) allocated/, 30_000, mark);
    await client.waitFor(/same session/, 30_000, mark);
    await download(bed, 4 * MiB, 22, `${dir}/r2.bin`);
    assertEquals(client.count(/connected to \S+ in /), 1, "one handshake in all");
  },
);

natTest(
  "mappings: an IN mapping publishes a service behind the NAT on the server's address",
  {},
  async (
    bed,
    dir,
    daemons,
  ) => {
    // The service on the client (behind the NAT), and a server that lets the key open 18080.
    const service = spawnDenoIn("origin", bed.client, "tests/support/origin_main.ts", [
      "127.0.0.1",
      "8080",
    ]);
    daemons.push(service);
    await service.waitFor(/ready/);
    const { client } = await startNatTunnel(
      bed,
      dir,
      daemons,
      {
        proxy: false,
        mappings: { tcp: ["IN^8080^0.0.0.0:18080"], udp: [`OUT^5300^${NAT_ADDR.turn}:3478`] },
      },
      [],
      true,
      ["--allow-in-ports", "18080", "--egress-allow", "10.77.1.0/24"],
    );
    await client.waitFor(/IN\^8080\^0\.0\.0\.0:18080: up/, 30_000);
    // And an OUT UDP mapping from behind the NAT: a STUN Binding to coturn through the tunnel
    // comes back with the server's address as the mapping (the server's relay socket asked).
    const ask = await bed.exec(bed.client, Deno.execPath(), [
      "eval",
      `const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
     const req = new Uint8Array([0,1,0,0,0x21,0x12,0xa4,0x42,1,2,3,4,5,6,7,8,9,10,11,12]);
     await s.send(req, { transport: "udp", hostname: "127.0.0.1", port: 5300 });
     const t = setTimeout(() => Deno.exit(3), 5000);
     const [d] = await s.receive(); clearTimeout(t);
     const v = new DataView(d.buffer); let o = 20;
     while (o < d.length) { const ty = v.getUint16(o), l = v.getUint16(o + 2);
       if (ty === 0x20) { console.log([d[o+8]^0x21, d[o+9]^0x12, d[o+10]^0xa4, d[o+11]^0x42].join(".")); }
       o += 4 + ((l + 3) & ~3); }`,
    ]);
    // The mapping's flow, and no answer (exit 3) would be a lost path: say what the mapping saw.
    const st = JSON.stringify((await client.statsDump()).stats.mappings);
    assertEquals(ask.code, 0, `no STUN answer through the mapping: ${st}`);
    assertEquals(
      new TextDecoder().decode(ask.stdout).trim(),
      NAT_ADDR.server,
      "seen as the server",
    );
    // A host on the far side (the TURN namespace) reaches the client's service via the server.
    const out = `${dir}/in.bin`;
    const r = await bed.exec(bed.turn, "curl", [
      "-sS",
      "-m",
      "60",
      "-o",
      out,
      `http://${NAT_ADDR.server}:18080/bytes/${8 * MiB}?seed=31`,
    ]);
    assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
    assertEquals(await sha256Hex(await Deno.readFile(out)), await sha256Hex(payload(8 * MiB, 31)));
  },
);
