/**
 * Test support: a real squid (Debian's package) on loopback with its own
 * config, logs and password file in a temporary directory: an open port, a
 * port that wants Basic authentication (when `basic_ncsa_auth` is there) and,
 * when openssl can make certificates, a TLS port. CONNECT only, to the ports
 * the test allows; names resolve only through 127.0.0.1.
 * @module
 */

import { freePort } from "./daemons.ts";

/** Where Debian installs squid. */
export const SQUID = "/usr/sbin/squid";
const NCSA_AUTH = ["/usr/lib/squid/basic_ncsa_auth", "/usr/lib64/squid/basic_ncsa_auth"];

/** Whether a file exists. */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether squid is installed. */
export const haveSquid: boolean = exists(SQUID);
/** The Basic-auth helper, when installed. */
export const ncsaAuth: string | undefined = NCSA_AUTH.find(exists);

/** A squid child with its own config, logs and password file in a temp dir. */
export interface Squid {
  openPort: number;
  authPort: number;
  /** The https_port (TLS to squid), when a certificate was given; else 0. */
  tlsPort: number;
  /** Stops squid, removes its directory, and resolves to its access log. */
  stop(): Promise<string>;
}

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** An htpasswd line (APR1-MD5, which basic_ncsa_auth reads). */
async function htpasswdLine(user: string, password: string): Promise<string> {
  if (exists("/usr/bin/htpasswd")) return (await run("htpasswd", ["-nbm", user, password])).trim();
  return `${user}:${(await run("openssl", ["passwd", "-apr1", password])).trim()}`;
}

/** A CA and a server certificate for 127.0.0.1 it signed, made with openssl in `dir`. */
async function makeCerts(dir: string): Promise<{ ca: string; cert: string; key: string } | null> {
  if (!exists("/usr/bin/openssl")) return null;
  const o = (args: string[]) => run("openssl", args);
  await o([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=ostp test CA",
    "-keyout",
    `${dir}/ca.key`,
    "-out",
    `${dir}/ca.pem`,
  ]);
  await o([
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=127.0.0.1",
    "-keyout",
    `${dir}/tls.key`,
    "-out",
    `${dir}/tls.csr`,
  ]);
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\n" +
      "extendedKeyUsage=serverAuth\n",
  );
  await o([
    "x509",
    "-req",
    "-in",
    `${dir}/tls.csr`,
    "-CA",
    `${dir}/ca.pem`,
    "-CAkey",
    `${dir}/ca.key`,
    "-CAcreateserial",
    "-days",
    "1",
    "-extfile",
    `${dir}/ext.cnf`,
    "-out",
    `${dir}/tls.pem`,
  ]);
  for (const f of ["tls.pem", "tls.key"]) await Deno.chmod(`${dir}/${f}`, 0o644);
  return {
    ca: await Deno.readTextFile(`${dir}/ca.pem`),
    cert: `${dir}/tls.pem`,
    key: `${dir}/tls.key`,
  };
}

export interface SquidSetup {
  /** Ports CONNECT may go to. */
  allowedPorts: number[];
  user: string;
  password: string;
}

/** Starts squid; resolves once every port accepts connections. */
export async function startSquid(
  setup: SquidSetup,
): Promise<Squid & { ca: string | null }> {
  const { allowedPorts, user, password } = setup;
  const dir = await Deno.makeTempDir({ prefix: "ostp-squid-" });
  let child: Deno.ChildProcess | null = null;
  try {
    await Deno.chmod(dir, 0o755);
    const openPort = freePort();
    let authPort = freePort();
    while (authPort === openPort) authPort = freePort();
    const certs = await makeCerts(dir).catch(() => null);
    let tlsPort = 0;
    if (certs) {
      do tlsPort = freePort(); while (tlsPort === openPort || tlsPort === authPort);
    }
    const passwd = `${dir}/passwd`;
    await Deno.writeTextFile(passwd, (await htpasswdLine(user, password)) + "\n");
    await Deno.chmod(passwd, 0o644);
    const conf = [
      `http_port 127.0.0.1:${openPort} name=open`,
      `http_port 127.0.0.1:${authPort} name=auth`,
      ...(certs
        ? [`https_port 127.0.0.1:${tlsPort} name=tls tls-cert=${certs.cert} tls-key=${certs.key}`]
        : []),
      "visible_hostname ostp-test",
      `pid_filename ${dir}/squid.pid`,
      `cache_log ${dir}/cache.log`,
      `access_log stdio:${dir}/access.log`,
      "cache_store_log none",
      `coredump_dir ${dir}`,
      "cache deny all",
      "cache_mem 8 MB",
      "netdb_filename none",
      "pinger_enable off",
      "icp_port 0",
      "htcp_port 0",
      "shutdown_lifetime 1 seconds",
      // Names are never looked up here (targets are IP literals); if one were, it stays local.
      "dns_nameservers 127.0.0.1",
      ...(ncsaAuth
        ? [
          `auth_param basic program ${ncsaAuth} ${passwd}`,
          "auth_param basic children 2 startup=1 idle=1",
          "auth_param basic realm ostp-test",
          "acl authed proxy_auth REQUIRED",
        ]
        : []),
      "acl open_port myportname open",
      "acl auth_port myportname auth",
      "acl tls_port myportname tls",
      "acl CONNECT method CONNECT",
      `acl test_ports port ${allowedPorts.join(" ")}`,
      "http_access deny !CONNECT",
      "http_access deny !test_ports",
      "http_access allow open_port",
      "http_access allow tls_port",
      ...(ncsaAuth ? ["http_access allow auth_port authed"] : []),
      "http_access deny all",
      "",
    ].join("\n");
    const confPath = `${dir}/squid.conf`;
    await Deno.writeTextFile(confPath, conf);
    await Deno.chmod(confPath, 0o644);
    if (Deno.uid() === 0) {
      // Squid started as root drops to its effective user ("proxy"), which writes the logs and pid.
      const ids = (await run("id", ["proxy"])).match(/uid=(\d+).*gid=(\d+)/);
      if (ids) await Deno.chown(dir, Number(ids[1]), Number(ids[2]));
    }
    child = new Deno.Command(SQUID, {
      args: ["-N", "-f", confPath],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const proc = child;
    const stderr = new Response(proc.stderr).text();
    let exited = false;
    proc.status.then(() => exited = true);
    const readLog = async () => {
      let log = "";
      try {
        log = await Deno.readTextFile(`${dir}/cache.log`);
      } catch { /* not written */ }
      return log;
    };
    // Ready once both ports accept connections.
    const until = performance.now() + 30_000;
    for (const port of [openPort, authPort, tlsPort].filter((p) => p !== 0)) {
      for (;;) {
        if (exited) {
          throw new Error(`squid exited at start:\n${await stderr}\n${await readLog()}`);
        }
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          break;
        } catch {
          if (performance.now() > until) {
            throw new Error(`squid did not listen:\n${await readLog()}`);
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
    const stop = async () => {
      try {
        proc.kill("SIGTERM");
      } catch { /* already gone */ }
      const killer = setTimeout(() => {
        try {
          proc.kill("SIGKILL");
        } catch { /* already gone */ }
      }, 10_000);
      await proc.status;
      clearTimeout(killer);
      await stderr;
      let log = "";
      try {
        log = await Deno.readTextFile(`${dir}/access.log`);
      } catch { /* none written */ }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      return log;
    };
    return { openPort, authPort, tlsPort, ca: certs?.ca ?? null, stop };
  } catch (e) {
    if (child) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}
