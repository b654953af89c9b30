import { SubjectPrefix, schemas as contractSchemas } from "@unibus/contracts";
import type { JsonSchema, ServiceSchemaReply } from "@unibus/contracts";
import { sha256, toHex } from "@unibus/crypto";
import { Access, ServiceDefinitionError } from "./definition.js";
import type { EndpointSpec, ServiceDefinition } from "./definition.js";

/** Micro endpoint name of the endpoint every kit service adds to describe itself. */
export const SCHEMA_ENDPOINT = "schema";
/** Last subject token of that endpoint: `unibus.v1.<namespace>.schema`. */
const SCHEMA_TOKEN = "schema";

/**
 * The subject namespace all of a service's endpoints share
 * (`unibus.v1.<namespace>.…`), or undefined when they share none (test
 * services on ad-hoc subjects): there is then no subject the service's
 * connection is sure to be allowed to serve, so it gets no schema endpoint.
 */
export function subjectNamespace(definition: ServiceDefinition): string | undefined {
  let found: string | undefined;
  for (const spec of Object.values(definition.endpoints)) {
    const tokens = spec.subject.split(".");
    if (`${tokens[0]}.${tokens[1]}` !== SubjectPrefix || tokens.length < 4) return undefined;
    const ns = tokens[2];
    if (found !== undefined && ns !== found) return undefined;
    found = ns;
  }
  return found;
}

/** Digest of an endpoint's request and reply schemas: the same text gives the same version. */
export function schemaVersion(request: JsonSchema, reply: JsonSchema): string {
  return toHex(sha256(new TextEncoder().encode(JSON.stringify([request, reply])))).slice(0, 16);
}

/** A service's endpoints as the kit registers them. */
export interface DescribedEndpoints {
  /** The definition's endpoints, plus {@link SCHEMA_ENDPOINT} when the service has a subject namespace. */
  readonly endpoints: Readonly<Record<string, EndpointSpec>>;
  /** {@link schemaVersion} of each endpoint whose schema ids are known. */
  readonly schemaVersions: ReadonlyMap<string, string>;
  /** Subject of the schema endpoint, if there is one. */
  readonly schemaSubject: string | undefined;
}

/**
 * The definition's endpoints plus `schema`, a public read-only endpoint that
 * answers with every endpoint's access, mutation flag, schema ids and JSON
 * Schemas. The micro protocol no longer has a SCHEMA verb; an endpoint any
 * connected client (and any micro-aware tool) can call is the portable way to
 * introspect a running bus. It reveals only what the contracts publish.
 *
 * @throws ServiceDefinitionError when the definition already uses the reserved name or subject.
 */
export function describeEndpoints(definition: ServiceDefinition): DescribedEndpoints {
  const all: Readonly<Record<string, JsonSchema>> = { ...contractSchemas, ...definition.schemas };
  const ns = subjectNamespace(definition);
  const subject = ns === undefined ? undefined : `${SubjectPrefix}.${ns}.${SCHEMA_TOKEN}`;
  let endpoints: Readonly<Record<string, EndpointSpec>> = definition.endpoints;
  if (subject !== undefined) {
    if (SCHEMA_ENDPOINT in definition.endpoints) {
      throw new ServiceDefinitionError(`service ${definition.name}: endpoint name ${SCHEMA_ENDPOINT} is reserved for the kit's schema endpoint`);
    }
    const clash = Object.entries(definition.endpoints).find(([, spec]) => spec.subject === subject);
    if (clash !== undefined) throw new ServiceDefinitionError(`service ${definition.name} endpoint ${clash[0]}: subject ${subject} is reserved for the kit's schema endpoint`);
    const own: EndpointSpec = {
      subject,
      request: "common.schema.request",
      reply: "common.schema.reply",
      mutates: false,
      access: Access.Public,
      handler: async () => reply,
    };
    endpoints = { ...definition.endpoints, [SCHEMA_ENDPOINT]: own };
  }
  const described: ServiceSchemaReply["endpoints"] = [];
  const schemaVersions = new Map<string, string>();
  for (const [name, spec] of Object.entries(endpoints)) {
    const request = all[spec.request];
    const replySchema = all[spec.reply];
    // Unknown ids are left to the validator compile, which fails the start with the id named.
    if (request === undefined || replySchema === undefined) continue;
    const version = schemaVersion(request, replySchema);
    schemaVersions.set(name, version);
    described.push({
      name,
      subject: spec.subject,
      access: spec.access,
      mutates: spec.mutates,
      request: spec.request,
      reply: spec.reply,
      schemaVersion: version,
      requestSchema: JSON.stringify(request),
      replySchema: JSON.stringify(replySchema),
    });
  }
  // Built once: the schemas cannot change while the service runs.
  const reply: ServiceSchemaReply = { service: definition.name, version: definition.version, endpoints: described };
  return { endpoints, schemaVersions, schemaSubject: subject };
}
