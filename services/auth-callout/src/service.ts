import type { NatsConnection } from "@nats-io/transport-node";
import type { ServiceMsg } from "@nats-io/services";
import type { AuditDenialRecord } from "@unibus/contracts";
import { CalloutSubject, ServiceName } from "@unibus/contracts";
import { defineService, rawEndpoint, startService } from "@unibus/kit";
import type { KitDeps, RawHandlerContext, RawOutcome, RunningService, ServiceDefinition } from "@unibus/kit";
import type { SigningKey } from "@unibus/crypto";
import { pino } from "pino";
import { DenyCode, PermissionCache } from "./handlers/authorize.js";
import type { AuthorizeResult } from "./handlers/authorize.js";
import type { CalloutContext } from "./handlers/callout.js";
import { handleCalloutRequest } from "./handlers/callout.js";
import { StreamDenialAudit } from "./store/denial-audit.js";
import type { DenialAudit } from "./store/denial-audit.js";
import { DenialCache } from "./denial-cache.js";
import type { PrincipalDirectory } from "./store/directory.js";
import type { AuthorizationRequest } from "./jwt.js";
import { calloutMetrics } from "./metrics.js";
import type { CalloutXkey } from "./xkey.js";
import { Tarpit } from "./tarpit.js";
import packageJson from "../package.json" with { type: "json" };

/** Dependencies of {@link createAuthCalloutService}, beyond the kit's (logger, clock). */
export interface AuthCalloutServiceDeps extends KitDeps {
  /** Account key named as `issuer` in the server's `auth_callout`. */
  issuer: SigningKey;
  /** Curve key named as `xkey` in `auth_callout`, if the server encrypts. */
  xkey?: CalloutXkey;
  directory: PrincipalDirectory;
  /** Account clients are placed in. Default `UNIBUS`. */
  appAccount?: string;
  /** Let unknown identities reach the replica handshake only (architecture §4). Default false: unknown is denied. */
  bootstrapAccess?: boolean;
  /** Seconds until the server disconnects a session (user JWT `exp`); unset = until kicked. */
  sessionTtlSeconds?: number;
  /**
   * Answers repeated refusals without a signature check or directory read.
   * Default: a fresh {@link DenialCache}; pass one to invalidate it on
   * users-bucket changes ({@link invalidateOnUserChanges}) or to inspect it.
   */
  denialCache?: DenialCache;
  /** Where refused logins are recorded. Default: the AUDIT_DENIALS stream on `nc`. */
  audit?: DenialAudit;
  /** Holds repeat offenders' refusals. Default: a fresh {@link Tarpit} (10,000 held at most). */
  tarpit?: Tarpit;
}

// Field bounds of the audit record schema: a client-chosen value never
// makes a record the stream or the endpoint would refuse.
const ADDRESS_MAX = 64;
const SERVER_MAX = 128;

// A cache-answered refusal's request was not signature-checked: read its fields defensively.
function text(v: unknown, fallback: string): string {
  return typeof v === "string" && v !== "" ? v : fallback;
}

/** The audit record of a refusal; `repeats` counts earlier cache answers it stands for. */
export function denialRecord(request: AuthorizationRequest, result: Extract<AuthorizeResult, { ok: false }>, now = new Date()): AuditDenialRecord {
  const repeats = result.cached?.report;
  return {
    reason: DenyCode[result.reason],
    // Set only once the key decoded as a user nkey (authorize's contract).
    ...(result.principal !== undefined ? { principal: result.principal } : {}),
    address: text(request.client_info.host, "unknown").slice(0, ADDRESS_MAX),
    server: text(request.server_id.name, text(request.server_id.id, "unknown")).slice(0, SERVER_MAX),
    time: now.toISOString(),
    ...(result.cached !== undefined ? { cached: true } : {}),
    ...(repeats !== undefined && repeats > 0 ? { repeats } : {}),
  };
}

/** Micro service name shown by `nats micro ls`. */
export const AUTH_CALLOUT_SERVICE_NAME = ServiceName.authCallout;

/** Micro metadata `protocol` of the callout endpoint. */
export const CALLOUT_PROTOCOL = "nats-auth-callout";

type CalloutHandler = (msg: ServiceMsg, ctx: RawHandlerContext) => Promise<RawOutcome>;

/**
 * The callout's endpoint table: one raw endpoint on `$SYS.REQ.USER.AUTH`
 * (micro endpoint `AUTH`), which speaks nats-server's callout protocol, not
 * the kit's envelope. Replicas share the subject in the micro queue group, so
 * any one answers; only the server's `$SYS._INBOX.` replies are answered.
 */
export function authCalloutDefinition(handler: CalloutHandler, encrypted: boolean): ServiceDefinition {
  return defineService({
    name: AUTH_CALLOUT_SERVICE_NAME,
    // The package's version, like every other service: a hand-kept copy went stale.
    version: packageJson.version,
    description: "unibus auth callout: nonce check, allowlist, per-principal permissions",
    metadata: { encrypted: String(encrypted) },
    endpoints: {},
    raw: {
      AUTH: rawEndpoint({ subject: CalloutSubject.auth, protocol: CALLOUT_PROTOCOL, replyPrefix: CalloutSubject.replyPrefix, handler }),
    },
  });
}

/**
 * The callout's request handler: answers a granted login with the signed
 * user JWT, a refusal with a signed refusal (held back for repeat offenders),
 * and a request it cannot trust with nothing signed. A denial is an answer,
 * not an error, in the stats; an untrusted request is one.
 */
function calloutHandler(ctx: CalloutContext, audit: DenialAudit, tarpit: Tarpit): CalloutHandler {
  return async (msg, { logger }) => {
    const outcome = await handleCalloutRequest(ctx, msg.data, msg.headers?.get(CalloutSubject.xkeyHeader) || undefined);
    if (outcome.kind === "rejected") {
      logger.warn({ err: outcome.error.message }, "request rejected");
      // No signed answer for an untrusted request; the server times out and denies.
      msg.respondError(400, "bad request");
      return { code: 400, reason: "invalid_request" };
    }
    const { result, request } = outcome;
    if (result.ok) {
      calloutMetrics.logins.inc({ result: "allowed", reason: "none" });
      logger.info({ principal: result.principal, role: result.role }, "granted");
      msg.respond(outcome.reply);
      return undefined;
    }
    // Server-side back-off: a repeat offender's refusal is held (a timer, no
    // work), which slows its retry loop. A send that fails (connection
    // closing) is the server's timeout: still a refusal.
    tarpit.hold(result.delayMs ?? 0, () => {
      try {
        msg.respondError(401, "unauthorized", outcome.reply);
      } catch (err) {
        logger.debug({ err: err instanceof Error ? err.message : String(err) }, "held refusal not sent");
      }
    });
    // Recording never delays or changes a refusal.
    calloutMetrics.logins.inc({ result: "denied", reason: DenyCode[result.reason] });
    if (result.cached !== undefined) calloutMetrics.denialCacheHits.inc();
    // A retry loop answered from the cache is reported about once a second, not per attempt.
    if (result.cached !== undefined && result.cached.report === undefined) return undefined;
    const record = denialRecord(request, result);
    logger.info({ principal: result.principal, reason: record.reason, address: record.address }, "denied");
    audit.record(record);
    return undefined;
  };
}

/**
 * Starts the callout with the kit, like every service: micro registration,
 * `$SRV.STATS` with real times and `last_error`, metrics, drain on stop.
 * `nc` must be the callout user's connection (an `auth_users` nkey user).
 */
export async function createAuthCalloutService(nc: NatsConnection, deps: AuthCalloutServiceDeps): Promise<RunningService> {
  const ctx: CalloutContext = {
    issuer: deps.issuer,
    appAccount: deps.appAccount ?? "UNIBUS",
    directory: deps.directory,
    authorize: { bootstrapAccess: deps.bootstrapAccess ?? false, cache: new PermissionCache(), denials: deps.denialCache ?? new DenialCache() },
    ...(deps.xkey !== undefined ? { xkey: deps.xkey } : {}),
    ...(deps.sessionTtlSeconds !== undefined ? { sessionTtlSeconds: deps.sessionTtlSeconds } : {}),
  };
  const logger = deps.logger ?? pino({ level: "info" });
  const audit = deps.audit ?? new StreamDenialAudit(nc, { warn: (obj, msg) => logger.warn(obj, msg) });
  const tarpit = deps.tarpit ?? new Tarpit();
  const running = await startService(nc, authCalloutDefinition(calloutHandler(ctx, audit, tarpit), deps.xkey !== undefined), { ...deps, logger });
  return {
    ...running,
    async stop() {
      tarpit.flush();
      await running.stop();
    },
  };
}
