import { performance } from "node:perf_hooks";
import { ErrorCode, ErrorReason, ReadOnlySubjects, SchemaRegistry, ServiceErrorHeader, UnibusError, encodeErrorReply } from "@unibus/contracts";
import type { NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import { Svcm } from "@nats-io/services";
import type { Service, ServiceMsg } from "@nats-io/services";
import { pino } from "pino";
import type { Logger } from "pino";
import { NonceBucket, openBuckets } from "./buckets.js";
import { Access, DEFAULT_MAX_PAYLOAD_BYTES } from "./definition.js";
import type { Role, ServiceDefinition } from "./definition.js";
import { EndpointStats } from "./endpoint-stats.js";
import { serviceJetStream } from "./jetstream.js";
import { recordRequest, serveMetrics } from "./metrics.js";
import { addRawEndpoints } from "./raw-endpoint.js";
import { describeEndpoints } from "./schema-endpoint.js";
import { discoveryGuarded, replyPermitted } from "./reply-rule.js";
import { runPipeline } from "./request-pipeline.js";
import type { EndpointPipeline, RequestTrace } from "./request-pipeline.js";

/** What the kit needs from its surroundings; every field has a safe default. */
export interface KitDeps {
  /** Logger; default pino at info. The kit adds `svc`. */
  logger?: Logger;
  /**
   * Role of a principal, or null if it has none. Required by "admin" endpoints
   * (only "admin" passes); a throw denies with 503 (fail closed).
   */
  resolveRole?: (principal: string) => Promise<Role | null>;
  /** Clock, unix ms; default Date.now. */
  now?: () => number;
  /** The `nonces` KV bucket; opened (created if missing) when a mutating endpoint needs it. */
  nonceBucket?: KV;
  /** Replicas for buckets the kit creates; default 1 (3 in the production cluster). */
  bucketReplicas?: number;
  /** Budget for bucket set-up on a cold cluster; default 30 s. */
  bucketBudgetMs?: number;
}

/** A started service. */
export interface RunningService {
  /** The underlying micro service (PING/INFO/STATS). */
  readonly service: Service;
  readonly name: string;
  /** Micro instance id. */
  readonly id: string;
  /** Requests dropped unanswered because their reply subject was not the requester's own inbox. */
  droppedRequests(): number;
  /** Stops taking requests, drains the subscriptions and waits for in-flight requests. */
  stop(): Promise<void>;
}

function serviceMetadata(definition: ServiceDefinition, schemaSubject: string | undefined): Record<string, string> {
  return { "unibus.api": "v1", ...(schemaSubject === undefined ? {} : { "unibus.schema": schemaSubject }), ...definition.metadata };
}

/**
 * Registers a service's endpoints as a micro service and starts answering.
 * Validators are compiled here, once; a definition that cannot run safely (an
 * unknown schema id, an admin endpoint without `resolveRole`) fails the start.
 */
export async function startService(nc: NatsConnection, definition: ServiceDefinition, deps: KitDeps = {}): Promise<RunningService> {
  const base = deps.logger ?? pino({ level: "info" });
  const logger = base.bindings()["svc"] === undefined ? base.child({ svc: definition.name }) : base;
  const now = deps.now ?? Date.now;
  const registry = new SchemaRegistry(definition.schemas);
  const described = describeEndpoints(definition);
  const endpoints = Object.entries(described.endpoints);

  for (const [name, spec] of endpoints) {
    if (spec.access === Access.Admin && deps.resolveRole === undefined) {
      throw new Error(`service ${definition.name} endpoint ${name}: admin access needs deps.resolveRole`);
    }
    // Clients resend read-only requests after a dropped connection; a
    // mutating endpoint on that list would be applied twice.
    if (spec.mutates && ReadOnlySubjects.has(spec.subject)) {
      throw new Error(`service ${definition.name} endpoint ${name}: ${spec.subject} is read-only in the contract but declared mutating`);
    }
  }
  const validators = new Map(endpoints.map(([name, spec]) => [name, { request: registry.validator(spec.request), reply: registry.validator(spec.reply) }]));

  let nonces = deps.nonceBucket;
  // Handshake endpoints keep their own nonces; only envelope-checked mutations need this bucket.
  if (nonces === undefined && endpoints.some(([, spec]) => spec.mutates && spec.access !== Access.Handshake)) {
    const buckets = await openBuckets(serviceJetStream(nc), [{ ...NonceBucket, replicas: deps.bucketReplicas ?? 1 }], {
      budgetMs: deps.bucketBudgetMs ?? 30_000,
      logger,
    });
    nonces = buckets.nonces;
  }

  const stats = new Map<string, EndpointStats>();
  // @nats-io/services pins its own nats-core build; the connection is the same
  // object at runtime, only the declared types come from two copies.
  let droppedReplies = 0;
  // Discovery replies are sent by @nats-io/services itself: only inboxes get them.
  const discoveryNc = discoveryGuarded(nc, (reply) => {
    droppedReplies++;
    logger.debug({ reply: reply ?? null }, "discovery request whose reply subject is not an inbox dropped");
  });
  const service = await new Svcm(discoveryNc as unknown as ConstructorParameters<typeof Svcm>[0]).add({
    name: definition.name,
    version: definition.version,
    description: definition.description,
    metadata: serviceMetadata(definition, described.schemaSubject),
    statsHandler: async (endpoint) => stats.get((endpoint as { name?: string }).name ?? "")?.data() ?? {},
  });
  const inflight = new Set<Promise<void>>();

  for (const [name, spec] of endpoints) {
    const v = validators.get(name);
    if (v === undefined) throw new Error(`validators missing for ${name}`);
    const pipeline: EndpointPipeline = {
      name,
      spec,
      validateRequest: v.request,
      validateReply: v.reply,
      nonces,
      service: definition.name,
      resolveRole: deps.resolveRole,
      now,
      logger: logger.child({ op: name }),
    };
    const handle = async (msg: ServiceMsg): Promise<void> => {
      // Only the requester's own inbox is answered (see replyPermitted):
      // anything else is dropped before any work, and counted.
      if (!replyPermitted(spec.access, msg.reply, msg.headers)) {
        droppedReplies++;
        pipeline.logger.debug({ reply: msg.reply ?? null }, "request whose reply subject is not the requester's inbox dropped");
        return;
      }
      const started = performance.now();
      const trace: RequestTrace = {};
      let failure: UnibusError | undefined;
      try {
        const data = await runPipeline(pipeline, msg, trace);
        msg.respond(data);
      } catch (err) {
        failure = err instanceof UnibusError ? err : new UnibusError(ErrorCode.Internal, ErrorReason.Internal, "internal error", { cause: err });
        const encoded = encodeErrorReply(failure);
        msg.respondError(failure.code, encoded.headers[ServiceErrorHeader] ?? failure.reason, encoded.data);
      }
      const elapsed = performance.now() - started;
      // nats.js writes a reply from a microtask queued by respond(); yielding
      // once lets that write reach the socket before the bookkeeping below
      // (stats, histogram, log line), which would otherwise delay every
      // caller's answer by its cost. Nothing here can change the reply.
      await Promise.resolve();
      stats.get(name)?.record(elapsed * 1e6, failure);
      recordRequest(definition.name, name, elapsed / 1000, failure?.reason);
      if (failure === undefined) {
        // Built only when it is written: at the default level the success line is off, and every request would pay for its fields.
        if (pipeline.logger.isLevelEnabled("debug")) pipeline.logger.debug({ principal: trace.principal, ms: Math.round(elapsed * 1000) / 1000, code: 200 }, "request served");
        return;
      }
      const fields = { principal: trace.principal, ms: Math.round(elapsed * 1000) / 1000 };
      if (failure.code >= 500) {
        // Only the log sees the cause; the caller got the generic message.
        const cause = failure.cause instanceof Error ? failure.cause.message : failure.cause === undefined ? undefined : JSON.stringify(failure.cause);
        pipeline.logger.error({ ...fields, code: failure.code, reason: failure.reason, err: cause }, "request failed");
      } else {
        pipeline.logger.info({ ...fields, code: failure.code, reason: failure.reason }, "request rejected");
      }
    };
    service.addEndpoint(name, {
      subject: spec.subject,
      metadata: {
        access: spec.access,
        mutates: String(spec.mutates),
        request: spec.request,
        reply: spec.reply,
        max_payload: String(spec.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES),
        schema_version: described.schemaVersions.get(name) ?? "",
      },
      handler: (err, msg) => {
        if (err !== null) {
          logger.error({ op: name, err: err.message }, "endpoint subscription failed");
          return;
        }
        const p = handle(msg).finally(() => inflight.delete(p));
        inflight.add(p);
      },
    });
    stats.set(name, new EndpointStats(service, name));
  }

  addRawEndpoints(
    {
      service,
      name: definition.name,
      logger,
      stats,
      inflight,
      onDrop: () => droppedReplies++,
    },
    definition.raw ?? {},
  );

  const metrics = serveMetrics(discoveryNc, { name: definition.name, id: service.info().id, version: definition.version, logger });
  logger.info({ op: "start", id: service.info().id, version: definition.version, endpoints: endpoints.length + Object.keys(definition.raw ?? {}).length }, "service started");
  return {
    service,
    name: definition.name,
    id: service.info().id,
    droppedRequests: () => droppedReplies,
    async stop() {
      metrics.stop();
      await service.stop();
      await Promise.allSettled([...inflight]);
      logger.info({ op: "stop" }, "service stopped");
    },
  };
}
