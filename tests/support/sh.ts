/**
 * Test support: small shell look-ups for the tests and benches that use
 * programs outside Deno (ab, curl, nginx, shadowsocks, apt-get, …).
 * @module
 */

/** Whether `bin` is on PATH (`command -v`). */
export async function which(bin: string): Promise<boolean> {
  const r = await new Deno.Command("sh", {
    args: ["-c", `command -v "$0"`, bin],
    stdout: "null",
    stderr: "null",
  }).output();
  return r.success;
}
