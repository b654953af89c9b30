/**
 * The oldest nats-server unibus runs on. Auth callout arrived in 2.10, but
 * releases before 2.15 lose acknowledged JetStream writes and streams in
 * known ways (after kills, membership changes, corrupt snapshots) and have
 * encryption-at-rest and auth-callout timeout bugs; docs/design.md lists them.
 */
export const MIN_NATS_SERVER_VERSION = "2.15.0";

/**
 * Extracts `major.minor.patch` from `nats-server --version` output
 * (`nats-server: v2.15.1`). Returns undefined when no version is present.
 */
export function parseNatsServerVersion(output: string): string | undefined {
  const m = /\bv?(\d+)\.(\d+)\.(\d+)/.exec(output);
  return m ? `${m[1]}.${m[2]}.${m[3]}` : undefined;
}

function parts(version: string): [number, number, number] {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(version.trim());
  if (!m) throw new TypeError(`not a version: ${JSON.stringify(version)}`);
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
}

/**
 * True when `version` >= `minimum`, comparing major, minor and patch
 * numerically (so 2.10.0 > 2.9.10). Pre-release suffixes are ignored.
 */
export function isAtLeast(version: string, minimum: string): boolean {
  const a = parts(version);
  const b = parts(minimum);
  for (let i = 0; i < 3; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x > y;
  }
  return true;
}
