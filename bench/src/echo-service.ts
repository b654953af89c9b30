/**
 * The service side of the kit-vs-raw bench, run as its own process (as every
 * unibus service is) so client and service do not share an event loop.
 *
 *   tsx bench/src/echo-service.ts <raw|kit|kit-mutating>   (server URL in UNIBUS_URL)
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { Svcm } from "@nats-io/services";
import { pino } from "pino";
import { Access, defineService, endpointFor, startService } from "@unibus/kit";

export const EchoSubject = { raw: "bench.raw.echo", kit: "unibus.v1.bench.echo", kitMutating: "unibus.v1.bench.echo_mutating" } as const;

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
  } else {
    const echo = endpointFor<BenchTypes>();
    const reply = async (req: BenchTypes["bench.echo.request"], caller: { anonymous: boolean; principal?: string }) => ({
      ...req,
      caller: caller.principal ?? "anonymous",
    });
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
    await startService(nc, definition, { logger: pino({ level: "warn" }) });
  }
  process.once("SIGTERM", () => {
    void nc.close().finally(() => process.exit(0));
  });
  process.stdout.write("ready\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
