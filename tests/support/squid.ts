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
  /** The squid process. */
  pid: number;
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
  /** Address squid listens on (default 127.0.0.1; a namespace's address when run inside one). */
  hostname?: string;
  user: string;
  password: string;
}

/** Starts squid; resolves once every port accepts connections. */
export async function startSquid(
  setup: SquidSetup,
): Promise<Squid & { ca: string | null }> {
  const { user, password } = setup;
  const host = setup.hostname ?? "127.0.0.1";
  // A listener of our own that squid may CONNECT to: the readiness probe's target,
  // so the probe never shows up among the test's own tunnels in the access log.
  const probeTarget = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const probePort = (probeTarget.addr as Deno.NetAddr).port;
  (async () => {
    for await (const c of probeTarget) c.close();
  })().catch(() => {});
  const allowedPorts = [...setup.allowedPorts, probePort];
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
      `http_port ${host}:${openPort} name=open`,
      `http_port ${host}:${authPort} name=auth`,
      ...(certs
        ? [`https_port ${host}:${tlsPort} name=tls tls-cert=${certs.cert} tls-key=${certs.key}`]
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
    // A service name of its own: squid names its shared-memory segments and IPC
    // after it, and tests run several squids at once.
    const service = `ostp${dir.replace(/[^A-Za-z0-9]/g, "").slice(-12)}`;
    child = new Deno.Command(SQUID, {
      args: ["-N", "-n", service, "-f", confPath],
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
          (await Deno.connect({ hostname: host, port })).close();
          break;
        } catch {
          if (performance.now() > until) {
            throw new Error(`squid did not listen:\n${await readLog()}`);
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
    // Listening is not ready: the authenticating port answers only once its
    // helper runs. Ready when an authenticated CONNECT is answered 200.
    if (ncsaAuth) {
      const auth = btoa(
        String.fromCharCode(...new TextEncoder().encode(`${user}:${password}`)),
      );
      for (;;) {
        if (exited) throw new Error(`squid exited at start:\n${await readLog()}`);
        if (await connectAnswer(host, authPort, probePort, auth) === 200) break;
        if (performance.now() > until) {
          throw new Error(`squid's authenticating port never answered 200:\n${await readLog()}`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const stop = async () => {
      try {
        probeTarget.close();
      } catch { /* already closed */ }
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
    return { pid: proc.pid, openPort, authPort, tlsPort, ca: certs?.ca ?? null, stop };
  } catch (e) {
    try {
      probeTarget.close();
    } catch { /* already closed */ }
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

/** Sends `CONNECT 127.0.0.1:target` with Basic `auth` to squid's `port`; the status, or 0. */
async function connectAnswer(
  host: string,
  port: number,
  target: number,
  auth: string,
): Promise<number> {
  let conn: Deno.TcpConn | null = null;
  try {
    conn = await Deno.connect({ hostname: host, port });
    await conn.write(
      new TextEncoder().encode(
        `CONNECT 127.0.0.1:${target} HTTP/1.1\r\nHost: 127.0.0.1:${target}\r\n` +
          `Proxy-Authorization: Basic ${auth}\r\n\r\n`,
      ),
    );
    const buf = new Uint8Array(256);
    const timer = setTimeout(() => conn?.close(), 2000);
    const n = await conn.read(buf).finally(() => clearTimeout(timer));
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(new TextDecoder().decode(buf.subarray(0, n ?? 0)));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  } finally {
    try {
      conn?.close();
    } catch { /* already closed */ }
  }
}
