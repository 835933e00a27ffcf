/**
 * An origin that never stops sending (for network namespaces):
 *   deno run -A tests/support/endless_main.ts <host> <port>
 * Every TCP connection gets, after its request head, an HTTP/1.0 200 response without a length
 * and then 64 KiB chunks for as long as the peer takes them. Prints "ready" when listening, and
 * every 250 ms while a connection's count moved `sent <connection> <bytes so far>`: how far the
 * peer's backpressure let the data go.
 * @module
 */

const [host = "0.0.0.0", port = "8081"] = Deno.args;
const listener = Deno.listen({ hostname: host, port: Number(port) });
console.log("ready");
const chunk = new Uint8Array(64 * 1024).map((_, i) => (i * 7) & 0xff);
const enc = new TextEncoder();
let next = 0;

async function serve(conn: Deno.Conn, id: number): Promise<void> {
  let sent = 0;
  let reported = -1;
  const timer = setInterval(() => {
    if (sent !== reported) console.log(`sent ${id} ${reported = sent}`);
  }, 250);
  try {
    // The request head (a client that sends none is served all the same once it sends a byte).
    const buf = new Uint8Array(4096);
    let head = "";
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) return;
      head += new TextDecoder().decode(buf.subarray(0, n));
      if (head.length > 65536) break;
    }
    await writeAll(
      conn,
      enc.encode("HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"),
    );
    for (;;) {
      await writeAll(conn, chunk);
      sent += chunk.length;
    }
  } catch {
    // the peer went away
  } finally {
    clearInterval(timer);
    console.log(`closed ${id} ${sent}`);
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

for await (const conn of listener) serve(conn, next++);
