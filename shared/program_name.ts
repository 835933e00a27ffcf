/**
 * How a user runs each program, for usage lines and hints: `ostp-server` /
 * `ostp-client` in a `deno compile` binary, `deno task server` /
 * `deno task client` from the repository.
 * @module
 */

/** Which of the two daemons. */
export type Daemon = "server" | "client";

/**
 * The command a user types to run `daemon`: its binary's name when this is a
 * compiled executable (`Deno.build.standalone`), else its `deno task`.
 */
export function programName(daemon: Daemon, standalone = Deno.build.standalone): string {
  return standalone ? `ostp-${daemon}` : `deno task ${daemon}`;
}

/**
 * A help line on `deno task -q`, which stops `deno task` from echoing the
 * command line (arguments included) on stderr; empty in a compiled binary.
 */
export function quietTaskHint(daemon: Daemon, standalone = Deno.build.standalone): string {
  return standalone
    ? ""
    : `\n"deno task -q ${daemon} …" keeps deno task from printing the command line.`;
}
