import { parseListenAddress } from "./http.js";
import type { AtRestDeclaration, HealthzOptions } from "./service.js";

/** Environment variables healthz reads (in main.ts only). */
export const HealthzEnv = {
  /** `host:port` of the HTTP health server; default loopback with a free port. */
  listen: "UNIBUS_HEALTHZ_LISTEN",
  /** Comma-separated nats-server monitoring URLs (`http://127.0.0.1:8222`). */
  monitorUrls: "UNIBUS_NATS_MONITOR_URLS",
  /** The JetStream cipher the deployment configured (`chachapoly`, `aes`), or `none`. */
  cipher: "UNIBUS_JS_CIPHER",
} as const;

/** Default bind: loopback only, so the posture is not a network service unless asked for. */
export const DEFAULT_HEALTHZ_LISTEN = "127.0.0.1:0";

const CIPHERS = new Set(["chachapoly", "aes"]);

/**
 * The healthz options from the environment.
 *
 * @throws RangeError naming the offending variable.
 */
export function loadHealthzOptions(env: NodeJS.ProcessEnv): HealthzOptions {
  const listenRaw = env[HealthzEnv.listen] || DEFAULT_HEALTHZ_LISTEN;
  let http;
  try {
    http = parseListenAddress(listenRaw);
  } catch (err) {
    throw new RangeError(`${HealthzEnv.listen}: ${(err as Error).message}`, { cause: err });
  }
  const monitorUrls = (env[HealthzEnv.monitorUrls] ?? "").split(",").map((s) => s.trim().replace(/\/+$/, "")).filter((s) => s !== "");
  for (const url of monitorUrls) {
    if (!/^https?:\/\/[^\s/]+$/.test(url)) throw new RangeError(`${HealthzEnv.monitorUrls}: not a base URL: ${JSON.stringify(url)}`);
  }
  const cipher = env[HealthzEnv.cipher]?.trim() || undefined;
  if (cipher !== undefined && cipher !== "none" && !CIPHERS.has(cipher)) throw new RangeError(`${HealthzEnv.cipher} must be chachapoly, aes or none, got ${JSON.stringify(cipher)}`);
  // Unset: unknown, not "unencrypted"; the posture never guesses.
  const atRest: AtRestDeclaration = cipher === undefined ? { encrypted: null, cipher: null } : cipher === "none" ? { encrypted: false, cipher: null } : { encrypted: true, cipher };
  return { http, monitorUrls, atRest };
}
