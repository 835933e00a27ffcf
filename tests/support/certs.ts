/**
 * Throwaway certificates for tests: a CA and a server certificate it signs,
 * made with openssl in a directory the test owns (EC P-256: fast to make).
 * @module
 */

/** The PEM files made by {@link makeTestCerts}. */
export interface TestCerts {
  /** The CA certificate clients trust. */
  ca: string;
  /** The server's certificate (signed by the CA). */
  cert: string;
  /** The server's private key. */
  key: string;
}

async function openssl(args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/**
 * Makes `ca.pem`, `server.pem` and `server.key` in `dir` for a server known
 * by `names` (DNS names and IP addresses, as subjectAltName entries).
 */
export async function makeTestCerts(dir: string, names: string[]): Promise<TestCerts> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await openssl([
    "req",
    "-x509",
    ...ec,
    "-days",
    "1",
    "-subj",
    "/CN=ostp test CA",
    "-keyout",
    `${dir}/ca.key`,
    "-out",
    `${dir}/ca.pem`,
  ]);
  await openssl([
    "req",
    ...ec,
    "-subj",
    `/CN=${names[0]}`,
    "-keyout",
    `${dir}/server.key`,
    "-out",
    `${dir}/server.csr`,
  ]);
  const san = names.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(",");
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    `basicConstraints=critical,CA:FALSE\nsubjectAltName=${san}\nextendedKeyUsage=serverAuth\n`,
  );
  await openssl([
    "x509",
    "-req",
    "-in",
    `${dir}/server.csr`,
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
    `${dir}/server.pem`,
  ]);
  for (const f of ["server.pem", "server.key", "ca.pem"]) await Deno.chmod(`${dir}/${f}`, 0o644);
  return { ca: `${dir}/ca.pem`, cert: `${dir}/server.pem`, key: `${dir}/server.key` };
}
