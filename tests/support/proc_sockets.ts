/**
 * Test support (Linux): the listening sockets a process holds, read from
 * /proc — TCP sockets in LISTEN state, unconnected UDP sockets and listening
 * Unix sockets whose inodes are among the process's open file descriptors.
 * @module
 */

/** One listening socket, e.g. `tcp 127.0.0.1:9229` or `unix /run/x.sock`. */
export interface ListeningSocket {
  kind: "tcp" | "tcp6" | "udp" | "udp6" | "unix";
  /** `addr:port` (IPv6 in brackets), or the Unix socket's path. */
  local: string;
  inode: string;
}

/** Inodes of the sockets among `/proc/<pid>/fd`. */
function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`));
      if (m) out.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** Decodes /proc/net's `0100007F:2405` (IPv4) or 32-hex-digit (IPv6) address. */
function decodeAddress(hex: string): string {
  const [a, p] = hex.split(":");
  const port = parseInt(p, 16);
  if (a.length === 8) {
    const b = [0, 2, 4, 6].map((i) => parseInt(a.slice(i, i + 2), 16)).reverse();
    return `${b.join(".")}:${port}`;
  }
  // Four 32-bit words, each in host (little-endian) order.
  const groups: string[] = [];
  for (let w = 0; w < 4; w++) {
    const word = a.slice(w * 8, w * 8 + 8);
    const bytes = [6, 4, 2, 0].map((i) => word.slice(i, i + 2));
    groups.push(bytes[0] + bytes[1], bytes[2] + bytes[3]);
  }
  return `[${groups.map((g) => g.replace(/^0+(?=.)/, "")).join(":")}]:${port}`;
}

/** The listening sockets of process `pid` (sorted, for comparison). */
export function listeningSockets(pid: number): ListeningSocket[] {
  const inodes = socketInodes(pid);
  const out: ListeningSocket[] = [];
  for (const kind of ["tcp", "tcp6", "udp", "udp6"] as const) {
    let text: string;
    try {
      text = Deno.readTextFileSync(`/proc/${pid}/net/${kind}`);
    } catch {
      continue; // no IPv6
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9])) continue;
      const listening = kind.startsWith("tcp") ? f[3] === "0A" : /^0+:0000$/.test(f[2]);
      if (listening) out.push({ kind, local: decodeAddress(f[1]), inode: f[9] });
    }
  }
  for (const line of Deno.readTextFileSync(`/proc/${pid}/net/unix`).split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    // Flags 00010000 is __SO_ACCEPTCON: a listening socket.
    if (f.length < 7 || !inodes.has(f[6]) || f[3] !== "00010000") continue;
    out.push({ kind: "unix", local: f[7] ?? "(unnamed)", inode: f[6] });
  }
  return out.sort((x, y) =>
    `${x.kind} ${x.local} ${x.inode}`.localeCompare(`${y.kind} ${y.local} ${y.inode}`)
  );
}

/** `kind local` lines, for messages. */
export function describeSockets(s: ListeningSocket[]): string {
  return s.map((x) => `${x.kind} ${x.local}`).join(", ") || "(none)";
}
