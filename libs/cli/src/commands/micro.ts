import type { NatsConnection } from "@nats-io/transport-node";
import { Svcm } from "@nats-io/services";
import { decodeReply, microEndpointName } from "@unibus/contracts";
import type { ServiceSchemaReply } from "@unibus/contracts";
import type { ServiceClient, ServiceIdentity, ServiceInfo, ServiceStats } from "@nats-io/services";
import { parseCommandArgs, stringFlag } from "../args.js";
import type { ParsedFlags } from "../args.js";
import { commandGroup } from "../command.js";
import type { Command } from "../command.js";
import { connectToBus, connectionHelp, connectionOptions, resolveConnectionSettings } from "../connection.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import type { CliIo } from "../io.js";
import { formatTable } from "../table.js";

/**
 * How long to gather replies: like `nats micro`, stop once replies stall for
 * {@link STALL_MS}, but never wait longer than the timeout (replies from every
 * instance of every service arrive on one inbox, count unknown in advance).
 */
const DEFAULT_TIMEOUT_MS = 2_000;
const STALL_MS = 300;

const microOptions = {
  ...connectionOptions,
  json: { type: "boolean" },
  timeout: { type: "string", short: "t" },
} as const;

function microHelp(verb: string, what: string): string {
  return `Usage: unibus micro ${verb} [NAME] [--json] [options]

${what}
Every running instance answers, so N replicas of a service show as N rows.

Arguments:
  NAME                  only this service (default: all services)

Options:
  --json                print JSON
  -t, --timeout MS      longest time to wait for replies (default ${DEFAULT_TIMEOUT_MS})
  -h, --help            show this help

${connectionHelp}`;
}

function timeoutOf(flags: ParsedFlags, command: string): number {
  const raw = stringFlag(flags, "timeout");
  if (raw === undefined) return DEFAULT_TIMEOUT_MS;
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms <= 0) throw new UsageError(`--timeout must be a positive number of milliseconds, got ${raw}`, command);
  return ms;
}

interface MicroRequest {
  readonly name: string | undefined;
  readonly json: boolean;
}

/**
 * Builds one `micro` subcommand: parse, connect, ask, print, close. `ask`
 * returns the exit code.
 */
function microCommand(
  verb: string,
  summary: string,
  what: string,
  ask: (client: ServiceClient, req: MicroRequest, io: CliIo) => Promise<number>,
): Command {
  const help = microHelp(verb, what);
  return {
    name: verb,
    summary,
    help,
    async run(args, io) {
      const command = `micro ${verb}`;
      const { flags, positionals } = parseCommandArgs(args, microOptions, { command, maxPositionals: 1 });
      if (flags.help) {
        io.out(help);
        return ExitCode.ok;
      }
      const timeout = timeoutOf(flags, command);
      const settings = await resolveConnectionSettings(flags, io);
      const nc = await connectToBus(settings, `unibus-cli micro ${verb}`);
      try {
        // @nats-io/services carries its own nats-core copy; the connection is the same object at run time.
        const client = new Svcm(nc as unknown as ConstructorParameters<typeof Svcm>[0]).client({
          strategy: "stall",
          stall: STALL_MS,
          maxWait: timeout,
        });
        return await ask(client, { name: positionals[0], json: flags.json === true }, io);
      } finally {
        await closeQuietly(nc);
      }
    },
  };
}

async function closeQuietly(nc: NatsConnection): Promise<void> {
  try {
    await nc.close();
  } catch {
    // The command's outcome is already decided; a failing close changes nothing.
  }
}

/**
 * Maps a failed query: "no responders" means nobody answered (returns, the
 * caller reports the empty result); anything else becomes a {@link CliError}.
 */
function rethrowQueryError(err: unknown): void {
  const e = err as Error;
  if (e.name === "NoRespondersError" || /no responders/i.test(e.message)) return;
  if (e.name === "PermissionViolationError" || /permissions violation/i.test(e.message)) {
    throw new CliError(`this identity may not query services: ${e.message}`, { cause: err });
  }
  throw new CliError(`service query failed: ${e.message}`, { cause: err });
}

/** Drains a reply iterator. */
async function gather<T>(replies: Promise<AsyncIterable<T>>): Promise<T[]> {
  const out: T[] = [];
  try {
    for await (const r of await replies) out.push(r);
  } catch (err) {
    rethrowQueryError(err);
  }
  return out;
}

function byNameThenId(a: ServiceIdentity, b: ServiceIdentity): number {
  return a.name.localeCompare(b.name) || a.id.localeCompare(b.id);
}

function noneAnswered(req: MicroRequest, io: CliIo): number {
  if (req.name !== undefined) throw new CliError(`no service named ${req.name} answered`);
  if (req.json) io.out("[]");
  else io.err("no services answered");
  return ExitCode.ok;
}

function infoJson(s: ServiceInfo): object {
  return {
    name: s.name,
    version: s.version,
    id: s.id,
    description: s.description,
    metadata: s.metadata ?? {},
    endpoints: s.endpoints ?? [],
  };
}

const microLs = microCommand("ls", "list running service instances", "Lists running service instances: NAME VERSION ID DESCRIPTION.", async (client, req, io) => {
  const infos = (await gather(client.info(req.name))).sort(byNameThenId);
  if (infos.length === 0) return noneAnswered(req, io);
  if (req.json) {
    io.out(JSON.stringify(infos.map(infoJson), null, 2));
    return ExitCode.ok;
  }
  io.out(formatTable([["NAME", "VERSION", "ID", "DESCRIPTION"], ...infos.map((s) => [s.name, s.version, s.id, s.description ?? ""])]));
  return ExitCode.ok;
});

const microInfo = microCommand("info", "show endpoints and metadata of service instances", "Shows each instance's description, metadata and endpoints.", async (client, req, io) => {
  const infos = (await gather(client.info(req.name))).sort(byNameThenId);
  if (infos.length === 0) return noneAnswered(req, io);
  if (req.json) {
    io.out(JSON.stringify(infos.map(infoJson), null, 2));
    return ExitCode.ok;
  }
  const blocks = infos.map((s) => {
    const lines = [`${s.name} ${s.version} (${s.id})`];
    if (s.description) lines.push(`  description: ${s.description}`);
    for (const [k, v] of Object.entries(s.metadata ?? {})) lines.push(`  metadata ${k}: ${v}`);
    lines.push("  endpoints:");
    const eps = s.endpoints ?? [];
    if (eps.length === 0) lines.push("    (none)");
    for (const ep of eps) lines.push(`    ${ep.name}  ${ep.subject}${ep.queue_group ? `  queue ${ep.queue_group}` : ""}`);
    return lines.join("\n");
  });
  io.out(blocks.join("\n\n"));
  return ExitCode.ok;
});

const microStats = microCommand("stats", "show request counters per endpoint", "Shows per-endpoint request, error and latency counters of each instance.", async (client, req, io) => {
  const stats = (await gather(client.stats(req.name))).sort(byNameThenId);
  if (stats.length === 0) return noneAnswered(req, io);
  if (req.json) {
    io.out(JSON.stringify(stats.map((s: ServiceStats) => ({ name: s.name, version: s.version, id: s.id, started: s.started, endpoints: s.endpoints ?? [] })), null, 2));
    return ExitCode.ok;
  }
  const rows = [["NAME", "ID", "ENDPOINT", "REQUESTS", "ERRORS", "AVG LATENCY", "STARTED"]];
  for (const s of stats) {
    const eps = s.endpoints ?? [];
    if (eps.length === 0) rows.push([s.name, s.id, "-", "0", "0", "-", s.started]);
    for (const ep of eps) {
      rows.push([s.name, s.id, ep.name, String(ep.num_requests), String(ep.num_errors), formatNanos(ep.average_processing_time), s.started]);
    }
  }
  io.out(formatTable(rows));
  return ExitCode.ok;
});

const microPing = microCommand("ping", "check which service instances answer, with round-trip time", "Pings service instances and prints each one's round-trip time.", async (client, req, io) => {
  const sent = performance.now();
  const pongs: { pong: ServiceIdentity; rttMs: number }[] = [];
  try {
    for await (const pong of await client.ping(req.name)) pongs.push({ pong, rttMs: performance.now() - sent });
  } catch (err) {
    rethrowQueryError(err);
  }
  if (pongs.length === 0) {
    throw new CliError(req.name === undefined ? "no services answered the ping" : `no service named ${req.name} answered the ping`);
  }
  pongs.sort((a, b) => byNameThenId(a.pong, b.pong));
  if (req.json) {
    io.out(JSON.stringify(pongs.map(({ pong, rttMs }) => ({ name: pong.name, version: pong.version, id: pong.id, rtt_ms: round(rttMs) })), null, 2));
    return ExitCode.ok;
  }
  io.out(formatTable([["NAME", "VERSION", "ID", "RTT"], ...pongs.map(({ pong, rttMs }) => [pong.name, pong.version, pong.id, `${round(rttMs)} ms`])]));
  return ExitCode.ok;
});

const schemaHelp = `Usage: unibus micro schema SERVICE [ENDPOINT] [options]

Prints, as JSON, what a running service says about its endpoints: subject,
access (public, signed, admin, handshake), whether it mutates, the schema
version, and the JSON Schemas of the request and reply bodies. The service
serves them itself (its \`schema\` endpoint, listed in $SRV.INFO), so they are
the ones the running code validates against.

Arguments:
  SERVICE               service name, e.g. membership
  ENDPOINT              one endpoint: its name (users.add), its micro name
                        (users-add) or its subject

Options:
  -t, --timeout MS      longest time to wait for replies (default ${DEFAULT_TIMEOUT_MS})
  -h, --help            show this help

${connectionHelp}`;

type SchemaEndpoint = ServiceSchemaReply["endpoints"][number];

/** What `micro schema` prints for one endpoint: the schemas as JSON, not JSON text. */
function endpointJson(e: SchemaEndpoint): object {
  return {
    name: e.name,
    subject: e.subject,
    access: e.access,
    mutates: e.mutates,
    schemaVersion: e.schemaVersion,
    request: { id: e.request, schema: JSON.parse(e.requestSchema) as unknown },
    reply: { id: e.reply, schema: JSON.parse(e.replySchema) as unknown },
  };
}

/**
 * Finds an endpoint by catalogue name (its micro name is the name with dots
 * as dashes, so a per-replica endpoint is found too), micro name, full
 * subject, or subject tail after the namespace of the schema subject.
 */
export function findSchemaEndpoint(reply: ServiceSchemaReply, schemaSubject: string, wanted: string): SchemaEndpoint | undefined {
  const namespace = schemaSubject.slice(0, schemaSubject.lastIndexOf(".") + 1);
  const micro = microEndpointName(wanted);
  return reply.endpoints.find((e) => e.name === wanted || e.name === micro || e.subject === wanted || e.subject === `${namespace}${wanted}`);
}

const microSchema: Command = {
  name: "schema",
  summary: "print the JSON Schemas a running service validates its endpoints against",
  help: schemaHelp,
  async run(args, io) {
    const command = "micro schema";
    const { flags, positionals } = parseCommandArgs(args, microOptions, { command, maxPositionals: 2 });
    if (flags.help) {
      io.out(schemaHelp);
      return ExitCode.ok;
    }
    const [name, wanted] = positionals;
    if (name === undefined) throw new UsageError("missing <service>", command);
    const timeout = timeoutOf(flags, command);
    const settings = await resolveConnectionSettings(flags, io);
    const nc = await connectToBus(settings, "unibus-cli micro schema");
    try {
      const client = new Svcm(nc as unknown as ConstructorParameters<typeof Svcm>[0]).client({ strategy: "stall", stall: STALL_MS, maxWait: timeout });
      const infos = await gather(client.info(name));
      if (infos.length === 0) throw new CliError(`no service named ${name} answered`);
      // Every instance of one version serves the same schemas; ask the one that announced the endpoint.
      const subject = infos.map((i) => i.endpoints?.find((e) => e.name === "schema")?.subject).find((s) => s !== undefined);
      if (subject === undefined) throw new CliError(`service ${name} has no schema endpoint (it predates it, or is not a kit service)`);
      let reply: ServiceSchemaReply;
      try {
        reply = decodeReply<ServiceSchemaReply>(await nc.request(subject, "{}", { timeout }));
      } catch (err) {
        throw new CliError(`${subject}: ${(err as Error).message}`, { cause: err });
      }
      if (wanted === undefined) {
        io.out(JSON.stringify({ service: reply.service, version: reply.version, endpoints: reply.endpoints.map(endpointJson) }, null, 2));
        return ExitCode.ok;
      }
      const found = findSchemaEndpoint(reply, subject, wanted);
      if (found === undefined) {
        throw new CliError(`service ${name} has no endpoint ${wanted}; it has: ${reply.endpoints.map((e) => e.name).join(", ")}`);
      }
      io.out(JSON.stringify({ service: reply.service, version: reply.version, ...endpointJson(found) }, null, 2));
      return ExitCode.ok;
    } finally {
      await closeQuietly(nc);
    }
  },
};

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

function formatNanos(ns: number | undefined): string {
  if (ns === undefined || ns === 0) return "-";
  if (ns < 1_000_000) return `${round(ns / 1_000)} µs`;
  return `${round(ns / 1_000_000)} ms`;
}

/** `unibus micro ls|info|stats|ping|schema`: the NATS micro protocol ($SRV.PING/INFO/STATS) and the kit's schema endpoint. */
export const microCommandGroup: Command = commandGroup({
  name: "micro",
  summary: "list and inspect running services (NATS micro protocol)",
  intro: "Usage: unibus micro <command> [NAME] [--json]\n\nAsks every running service instance over $SRV.PING / $SRV.INFO / $SRV.STATS\n(the same protocol as `nats micro`).",
  subcommands: [microLs, microInfo, microStats, microPing, microSchema],
});
