import { resolve } from "node:path";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import { nkeyAuthenticator } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { connect as connectSdk, tlsOption } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import type { ParsedFlags } from "./args.js";
import { stringFlag } from "./args.js";
import { CliError } from "./errors.js";
import { EnvVar, readHomeEnvFile, resolveHome } from "./home.js";
import { loadIdentityForCli } from "./identity-file.js";
import type { CliIo } from "./io.js";

/** Options every bus-talking command accepts. */
export const connectionOptions = {
  server: { type: "string", short: "s" },
  identity: { type: "string", short: "i" },
} as const;

/** Help lines for {@link connectionOptions}. */
export const connectionHelp = [
  "Connection:",
  "  -s, --server URL      bus URL, or several comma-separated (default: $UNIBUS_URL, else <UNIBUS_HOME or ./.unibus>/env)",
  "  -i, --identity PATH   identity file (default: $UNIBUS_IDENTITY, else the same env file)",
].join("\n");

/** Where to connect and as whom; each field remembers where it came from for error messages. */
export interface ConnectionSettings {
  /** Bus URL. */
  readonly server: string;
  /** Absolute path of the identity file, or undefined to connect without credentials. */
  readonly identityPath: string | undefined;
  /** Human description of where the settings came from. */
  readonly source: string;
  /** PEM CA file to trust for TLS (`UNIBUS_TLS_CA`, or the env file `unibus up --tls` writes). */
  readonly tlsCa?: string;
  /** Public readiness base URL (`UNIBUS_HEALTHZ_URL`), used only to explain a refused login. */
  readonly healthzUrl?: string;
}

/**
 * Resolves each setting from its flag, then its environment variable, then
 * the env file `unibus up` writes, so `npx unibus micro ls` works with no
 * setup next to a running `npm start`.
 */
export async function resolveConnectionSettings(flags: ParsedFlags, io: CliIo): Promise<ConnectionSettings> {
  let server = stringFlag(flags, "server") ?? nonEmpty(io.env[EnvVar.url]);
  let identity = stringFlag(flags, "identity") ?? nonEmpty(io.env[EnvVar.identity]);
  let tlsCa = nonEmpty(io.env[EnvVar.tlsCa]);
  let healthzUrl = nonEmpty(io.env[EnvVar.healthzUrl]);
  let source = "flags/environment";
  if (server === undefined || identity === undefined) {
    const home = resolveHome(io.env, io.cwd);
    const file = await readHomeEnvFile(home);
    if (file) {
      source = server === undefined && identity === undefined ? home.envFile : `flags/environment and ${home.envFile}`;
      server ??= nonEmpty(file[EnvVar.url]);
      identity ??= nonEmpty(file[EnvVar.identity]);
      // The CA belongs to the bus the file describes: only taken with its URL.
      if (stringFlag(flags, "server") === undefined && nonEmpty(io.env[EnvVar.url]) === undefined) tlsCa ??= nonEmpty(file[EnvVar.tlsCa]);
      healthzUrl ??= nonEmpty(file[EnvVar.healthzUrl]);
    }
    if (server === undefined) {
      throw new CliError(
        "no bus to talk to: pass --server URL or set UNIBUS_URL, " +
          `or start a local bus with \`npx unibus up\` (no ${home.envFile} found)`,
      );
    }
  }
  return {
    server,
    identityPath: identity === undefined ? undefined : resolve(io.cwd, identity),
    source,
    ...(tlsCa === undefined ? {} : { tlsCa: resolve(io.cwd, tlsCa) }),
    ...(healthzUrl === undefined ? {} : { healthzUrl }),
  };
}

/**
 * The server URLs in a setting: a cluster is given as a comma-separated list
 * (as services take `UNIBUS_URL`), so the CLI still reaches the bus while one
 * node is down.
 */
export function serverUrls(server: string): string[] {
  const urls = server
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  if (urls.length === 0) throw new CliError(`no server URL in ${JSON.stringify(server)}: give one URL or several separated by commas`);
  return urls;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === "" ? undefined : v;
}

/**
 * Connects once, without reconnecting: a CLI command should fail fast with a
 * clear message rather than wait for a server that is not there.
 */
export async function connectToBus(settings: ConnectionSettings, name = "unibus-cli"): Promise<NatsConnection> {
  const identity = settings.identityPath === undefined ? undefined : await loadIdentityForCli(settings.identityPath);
  const servers = serverUrls(settings.server);
  try {
    return await connect({
      servers,
      name,
      reconnect: false,
      timeout: 5_000,
      ...tlsOption(servers, settings.tlsCa === undefined ? undefined : { caFile: settings.tlsCa }),
      // The callout lets a principal subscribe only to its own inbox (architecture §4).
      ...(identity ? { authenticator: nkeyAuthenticator(identity.signingKey), inboxPrefix: `_INBOX.${identity.principal}` } : {}),
    });
  } catch (err) {
    throw await connectError(err, settings, identity?.principal);
  }
}

/**
 * Connects through the SDK as the settings' identity, for signed
 * control-plane requests. An identity is required: the bus admits no
 * anonymous clients.
 */
export async function connectClient(settings: ConnectionSettings, name = "unibus-cli"): Promise<UnibusClient> {
  if (settings.identityPath === undefined) {
    throw new CliError("no identity to connect as: pass --identity PATH or set UNIBUS_IDENTITY (or start the local bus with `npx unibus up`)");
  }
  return connectClientAs(settings, await loadIdentityForCli(settings.identityPath), name);
}

/** {@link connectClient} with an identity already loaded. */
export async function connectClientAs(settings: ConnectionSettings, identity: Identity, name = "unibus-cli"): Promise<UnibusClient> {
  const servers = serverUrls(settings.server);
  try {
    return await connectSdk({ servers, identity, name, ...(settings.tlsCa === undefined ? {} : { tls: { caFile: settings.tlsCa } }) });
  } catch (err) {
    throw await connectError(err, settings, identity.principal);
  }
}

/**
 * Turns a failed request into a {@link CliError} the person at the terminal
 * can act on: a service's {@link UnibusError} keeps its caller-safe message
 * behind a word for its code; transport failures say which service is missing.
 */
export function requestError(err: unknown, what: string): CliError {
  if (err instanceof UnibusError) {
    const word = ERROR_WORDS[err.code] ?? "failed";
    return new CliError(`${word}: ${err.message}`, { cause: err });
  }
  const e = err as Error;
  if (e.name === "NoRespondersError" || /no responders/i.test(e.message)) {
    return new CliError(`no ${what} service answered: is the bus fully up?`, { cause: err });
  }
  if (e.name === "TimeoutError" || /timeout/i.test(e.message)) {
    return new CliError(`the ${what} service did not answer in time`, { cause: err });
  }
  if (e.name === "PermissionViolationError" || /permissions violation/i.test(e.message)) {
    return new CliError(`forbidden: this identity may not send that request (${e.message})`, { cause: err });
  }
  return new CliError(`${what} request failed: ${e.message}`, { cause: err });
}

const ERROR_WORDS: Partial<Record<number, string>> = {
  [ErrorCode.BadRequest]: "invalid request",
  [ErrorCode.Unauthorized]: "not authenticated",
  [ErrorCode.Forbidden]: "forbidden",
  [ErrorCode.NotFound]: "not found",
  [ErrorCode.Conflict]: "conflict",
  [ErrorCode.PayloadTooLarge]: "too large",
  [ErrorCode.TooManyRequests]: "rate limited",
  [ErrorCode.Internal]: "service error",
  [ErrorCode.Unavailable]: "unavailable",
};

/** What the public readiness endpoint says: the bus can decide logins, cannot, or there is no answer. */
export type BusReadiness = "ready" | "not_ready" | "unknown";

const READINESS_TIMEOUT_MS = 2_000;

/** Asks the readiness URL (no credentials, nothing about any account) whether the bus can decide logins. */
export async function busReadiness(healthzUrl: string | undefined): Promise<BusReadiness> {
  if (healthzUrl === undefined) return "unknown";
  let url: URL;
  try {
    url = new URL(healthzUrl);
  } catch {
    return "unknown";
  }
  if (url.pathname === "" || url.pathname === "/") url.pathname = "/readyz";
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(READINESS_TIMEOUT_MS) });
    await res.body?.cancel();
    return res.ok ? "ready" : "not_ready";
  } catch {
    return "unknown";
  }
}

/**
 * Three failures, three messages: the bus cannot be reached; it is reached
 * but cannot decide logins (no quorum, directory unavailable: the readiness
 * endpoint says so); or it decided to refuse this identity, where only an
 * admin can see why (the server tells the client nothing more, by design).
 */
async function connectError(err: unknown, settings: ConnectionSettings, principal: string | undefined): Promise<CliError> {
  const e = err as Error & { cause?: { code?: unknown } };
  const who = settings.identityPath ? `identity ${settings.identityPath}` : "no identity";
  if (e.name === "AuthorizationError" || /authorization violation|authentication/i.test(e.message)) {
    const ask = principal === undefined ? "" : `\nAsk an admin to run \`unibus audit denials --principal ${principal}\` to see why.`;
    const readiness = await busReadiness(settings.healthzUrl);
    if (readiness === "not_ready") {
      return new CliError(
        `the bus at ${settings.server} is reachable but cannot admit anyone right now: it has no quorum or its directory is unavailable ` +
          `(readiness check ${settings.healthzUrl ?? ""} failed).\nRetry once the bus has recovered; your identity was not judged.`,
        { cause: err },
      );
    }
    if (readiness === "ready") {
      return new CliError(
        `this identity was refused by the bus at ${settings.server} (${who}${principal === undefined ? "" : `, principal ${principal}`}).` +
          (principal === undefined ? "\nUse an identity the bus knows, e.g. the admin identity `unibus up` printed." : ask),
        { cause: err },
      );
    }
    return new CliError(
      `the bus at ${settings.server} refused ${who} (authorization violation): either this identity is not allowed in, ` +
        `or the bus's directory is unavailable (set ${EnvVar.healthzUrl} to tell which).` +
        (principal === undefined ? "\nUse an identity the bus knows, e.g. the admin identity `unibus up` printed." : ask),
      { cause: err },
    );
  }
  if (e.name === "ConnectionError" || e.name === "TimeoutError") {
    return new CliError(
      `cannot reach the bus at ${settings.server}: ${e.message}.\nIs it running? Start one with \`npx unibus up\`.`,
      { cause: err },
    );
  }
  return new CliError(`cannot connect to ${settings.server}: ${e.message}`, { cause: err });
}
