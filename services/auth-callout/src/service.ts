import type { NatsConnection } from "@nats-io/transport-node";
import type { Service, ServiceMsg } from "@nats-io/services";
import { Svcm } from "@nats-io/services";
import type { AuditDenialRecord } from "@unibus/contracts";
import { EndpointStats, serveMetrics } from "@unibus/kit";
import type { SigningKey } from "@unibus/crypto";
import { DenyCode, PermissionCache } from "./authorize.js";
import type { AuthorizeResult } from "./authorize.js";
import type { CalloutContext } from "./callout.js";
import { handleCalloutRequest } from "./callout.js";
import { CalloutSubject } from "@unibus/contracts";
import { StreamDenialAudit } from "./denial-audit.js";
import type { DenialAudit } from "./denial-audit.js";
import { DenialCache } from "./denial-cache.js";
import type { PrincipalDirectory } from "./directory.js";
import type { AuthorizationRequest } from "./jwt.js";
import { calloutMetrics } from "./metrics.js";
import type { CalloutXkey } from "./xkey.js";
import packageJson from "../package.json" with { type: "json" };

/** The subset of a pino logger the service uses (one JSON event per line, stable keys). */
export interface CalloutLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Dependencies of {@link createAuthCalloutService}. */
export interface AuthCalloutServiceDeps {
  /** Account key named as `issuer` in the server's `auth_callout`. */
  issuer: SigningKey;
  /** Curve key named as `xkey` in `auth_callout`, if the server encrypts. */
  xkey?: CalloutXkey;
  directory: PrincipalDirectory;
  logger: CalloutLogger;
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
}

/** Refusals held back at once at most (each is one timer and one reply buffer). */
const MAX_HELD_REFUSALS = 10_000;

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
export const AUTH_CALLOUT_SERVICE_NAME = "auth-callout";

/**
 * Registers the callout as a micro service on `$SYS.REQ.USER.AUTH` (group
 * `$SYS.REQ.USER`, endpoint `AUTH`), the shape of synadia-io/orbit.js's callout.
 * Replicas share the subject in the micro queue group, so any one answers.
 * `nc` must be the callout user's connection (an `auth_users` nkey user).
 */
export async function createAuthCalloutService(nc: NatsConnection, deps: AuthCalloutServiceDeps): Promise<Service> {
  const ctx: CalloutContext = {
    issuer: deps.issuer,
    appAccount: deps.appAccount ?? "UNIBUS",
    directory: deps.directory,
    authorize: { bootstrapAccess: deps.bootstrapAccess ?? false, cache: new PermissionCache(), denials: deps.denialCache ?? new DenialCache() },
    ...(deps.xkey !== undefined ? { xkey: deps.xkey } : {}),
    ...(deps.sessionTtlSeconds !== undefined ? { sessionTtlSeconds: deps.sessionTtlSeconds } : {}),
  };
  const { logger } = deps;
  let held = 0;
  const audit = deps.audit ?? new StreamDenialAudit(nc, { warn: (obj, msg) => logger.warn({ svc: "auth-callout", ...obj }, msg) });
  // @nats-io/services carries its own nats-core copy; the connection is the same object at runtime.
  const svcm = new Svcm(nc as unknown as ConstructorParameters<typeof Svcm>[0]);
  const service = await svcm.add({
    name: AUTH_CALLOUT_SERVICE_NAME,
    // The package's version, like every other service: a hand-kept copy went stale.
    version: packageJson.version,
    description: "unibus auth callout: nonce check, allowlist, per-principal permissions",
    metadata: { encrypted: String(deps.xkey !== undefined) },
  });
  // Its counters live on the process's default registry like every service's;
  // healthz's /metrics collects them over $SRV.METRICS.
  const metrics = serveMetrics(nc, { name: AUTH_CALLOUT_SERVICE_NAME, id: service.info().id, version: service.info().version });
  void service.stopped.then(() => metrics.stop(), () => metrics.stop());

  const onRequest = async (msg: ServiceMsg): Promise<{ code: number; reason: string } | undefined> => {
    const outcome = await handleCalloutRequest(ctx, msg.data, msg.headers?.get(CalloutSubject.xkeyHeader) || undefined);
    if (outcome.kind === "rejected") {
      logger.warn({ svc: "auth-callout", op: "authorize", err: outcome.error.message }, "request rejected");
      // No signed answer for an untrusted request; the server times out and denies.
      msg.respondError(400, "bad request");
      return { code: 400, reason: "invalid_request" };
    }
    const { result, request } = outcome;
    if (result.ok) {
      calloutMetrics.logins.inc({ result: "allowed", reason: "none" });
      logger.info({ svc: "auth-callout", op: "authorize", principal: result.principal, role: result.role }, "granted");
      msg.respond(outcome.reply);
      return undefined;
    }
    // Server-side back-off: a repeat offender's refusal is held (a timer, no
    // work), which slows its retry loop; past a bound of held answers they go
    // out at once rather than pile up memory.
    const delayMs = result.delayMs ?? 0;
    if (delayMs > 0 && held < MAX_HELD_REFUSALS) {
      held++;
      setTimeout(() => {
        held--;
        msg.respondError(401, "unauthorized", outcome.reply);
      }, delayMs);
    } else {
      msg.respondError(401, "unauthorized", outcome.reply);
    }
    // Recording never delays or changes a refusal.
    calloutMetrics.logins.inc({ result: "denied", reason: DenyCode[result.reason] });
    if (result.cached !== undefined) calloutMetrics.denialCacheHits.inc();
    // A retry loop answered from the cache is reported about once a second, not per attempt.
    if (result.cached !== undefined && result.cached.report === undefined) return undefined;
    const record = denialRecord(request, result);
    logger.info({ svc: "auth-callout", op: "authorize", principal: result.principal, reason: record.reason, address: record.address }, "denied");
    audit.record(record);
    return undefined;
  };

  service.addGroup(CalloutSubject.group).addEndpoint(CalloutSubject.endpoint, {
    handler: (err, msg) => {
      if (err !== null) {
        logger.error({ svc: "auth-callout", op: "endpoint", err: err.message }, "endpoint failed");
        return;
      }
      const started = process.hrtime.bigint();
      onRequest(msg).then(
        (failure) => stats.record(Number(process.hrtime.bigint() - started), failure),
        (e: unknown) => {
          // Fail closed: an internal error answers nothing signed; the server denies on timeout.
          logger.error({ svc: "auth-callout", op: "authorize", err: e instanceof Error ? e.message : String(e) }, "handler failed");
          msg.respondError(500, "internal error");
          stats.record(Number(process.hrtime.bigint() - started), { code: 500, reason: "internal" });
        },
      );
    },
    metadata: { subject: CalloutSubject.auth },
  });
  // The kit's micro stats: real async processing time, and `last_error`,
  // which micro clients expect in every $SRV.STATS endpoint entry. A denial
  // is an answer, not an error; a request the callout cannot trust is one.
  const stats = new EndpointStats(service, CalloutSubject.endpoint);
  return service;
}
