/**
 * How a conformance suite registers its tests: each test gets a fresh
 * harness from `make` and releases it with `release`, even when it fails.
 * @module
 */

/** Registers one test of a suite: `${label}: ${name}`. */
export type SuiteTest<H> = (name: string, fn: (h: H) => Promise<void>) => void;

/** A test registrar for the suite `label` (all skipped when `ignore`). */
export function suiteTest<H>(
  label: string,
  make: () => Promise<H>,
  release: (h: H) => Promise<void>,
  ignore = false,
): SuiteTest<H> {
  return (name, fn) =>
    Deno.test({
      name: `${label}: ${name}`,
      ignore,
      sanitizeOps: false,
      sanitizeResources: false,
      async fn() {
        const h = await make();
        try {
          await fn(h);
        } finally {
          await release(h);
        }
      },
    });
}
