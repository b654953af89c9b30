/**
 * The service side of the kit-vs-raw bench, run as its own process (as every
 * unibus service is) so client and service do not share an event loop.
 *
 *   tsx bench/src/echo-service.ts <raw|verify|kit>   (server URL in UNIBUS_URL)
 *
 * `verify` is the honest limit of a signed endpoint (P2): the raw echo plus
 * the one Ed25519 verification of the request envelope that every
 * control-plane request keeps, and nothing else.
 *
 * For P7 (bench/src/scaling.ts) the kit echo takes two more settings:
 *   UNIBUS_BENCH_WORK  PBKDF2-SHA256 iterations the handler runs per request (a
 *                      fixed amount of CPU, like a KDF or a heavy check; default 0)
 *   UNIBUS_BENCH_CTL   a subject on which "stop" / "start" leave and rejoin the
 *                      queue group (the process stays up and warm), answered "ok"
 */
import { pbkdf2Sync } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { Svcm } from "@nats-io/services";
import { pino } from "pino";
import { envelopeFromHeaders, verifyEnvelope } from "@unibus/crypto";
import { Access, defineService, endpointFor, startService } from "@unibus/kit";
import type { RunningService } from "@unibus/kit";

export const EchoSubject = { raw: "bench.raw.echo", verify: "bench.verify.echo", kit: "unibus.v1.bench.echo", kitMutating: "unibus.v1.bench.echo_mutating" } as const;

interface BenchTypes {
  "bench.echo.request": { roomId: string; text: string; seq?: number };
  "bench.echo.reply": { roomId: string; text: string; seq?: number; caller: string };
}

const schema = (name: string): Record<string, unknown> => JSON.parse(readFileSync(new URL(`../schemas/${name}`, import.meta.url), "utf8"));

async function main(): Promise<void> {
  const mode = process.argv[2];
  const url = process.env.UNIBUS_URL ?? "";
  const nc = await connect({ servers: url, name: `bench-${mode}` });
  if (mode === "raw") {
    // @nats-io/services pins its own nats-core build: same object, two type copies.
    const svc = await new Svcm(nc as unknown as ConstructorParameters<typeof Svcm>[0]).add({ name: "bench-raw", version: "0.0.1" });
    svc.addEndpoint("echo", { subject: EchoSubject.raw, handler: (_err, msg) => msg.respond(msg.data) });
  } else if (mode === "verify") {
    const svc = await new Svcm(nc as unknown as ConstructorParameters<typeof Svcm>[0]).add({ name: "bench-verify", version: "0.0.1" });
    svc.addEndpoint("echo", {
      subject: EchoSubject.verify,
      handler: (_err, msg) => {
        const envelope = envelopeFromHeaders((name) => msg.headers?.get(name));
        if (envelope === undefined || !verifyEnvelope(envelope, msg.subject, msg.data)) msg.respondError(401, "unauthorized");
        else msg.respond(msg.data);
      },
    });
  } else {
    const echo = endpointFor<BenchTypes>();
    const work = Number(process.env.UNIBUS_BENCH_WORK ?? 0);
    const reply = async (req: BenchTypes["bench.echo.request"], caller: { anonymous: boolean; principal?: string }) => {
      // Fixed CPU per request (not wall time: a preempted replica does not get credit for waiting).
      if (work > 0) pbkdf2Sync(req.text, req.roomId, work, 32, "sha256");
      return { ...req, caller: caller.principal ?? "anonymous" };
    };
    const definition = defineService({
      name: "bench-kit",
      version: "0.0.1",
      description: "kit echo for the bench",
      schemas: { "bench.echo.request": schema("echo.request.json"), "bench.echo.reply": schema("echo.reply.json") },
      endpoints: {
        echo: echo({ subject: EchoSubject.kit, request: "bench.echo.request", reply: "bench.echo.reply", mutates: false, access: Access.Signed, handler: reply }),
        echoMutating: echo({ subject: EchoSubject.kitMutating, request: "bench.echo.request", reply: "bench.echo.reply", mutates: true, access: Access.Signed, handler: reply }),
      },
    });
    const logger = pino({ level: "warn" });
    let running: RunningService | undefined = await startService(nc, definition, { logger });
    const ctl = process.env.UNIBUS_BENCH_CTL;
    if (ctl) {
      nc.subscribe(ctl, {
        callback: (_err, msg) => {
          const op = msg.string();
          void (async () => {
            if (op === "stop" && running) {
              await running.stop();
              running = undefined;
            } else if (op === "start" && !running) {
              running = await startService(nc, definition, { logger });
            }
            await nc.flush();
            msg.respond("ok");
          })();
        },
      });
    }
  }
  process.once("SIGTERM", () => {
    void nc.close().finally(() => process.exit(0));
  });
  process.stdout.write("ready\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
