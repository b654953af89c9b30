import { HealthzEnv } from "@unibus/contracts";
import { parseListenAddress } from "./http.js";
import type { AtRestDeclaration, HealthzOptions } from "./service.js";

// The launcher sets them, so their names are a contract both sides import.
export { HealthzEnv } from "@unibus/contracts";

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
  const wsUrl = env[HealthzEnv.wsUrl]?.trim() || undefined;
  if (wsUrl !== undefined && !/^wss?:\/\/[^\s/]+\/?$/.test(wsUrl)) throw new RangeError(`${HealthzEnv.wsUrl}: not a ws:// or wss:// URL: ${JSON.stringify(wsUrl)}`);
  return { http, monitorUrls, atRest, ...(wsUrl === undefined ? {} : { panel: { wsUrl } }) };
}
