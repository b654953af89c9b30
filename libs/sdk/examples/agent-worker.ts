/**
 * An agent worker on the public SDK only.
 *
 * Agents talk inside an end-to-end encrypted room: the ACL grants members
 * room subjects only, so an agent's "inbox" is an addressing convention
 * inside the room's messages, `{to: "agent.<name>.in", …}`, and its answers
 * are `{to: "agent.<name>.out", …}` in the same room. Every message is
 * authenticated (the sender is proven by its signature) and encrypted.
 *
 * Run it as a process:
 *   UNIBUS_URL=nats://… UNIBUS_IDENTITY=agent.id npx tsx libs/sdk/examples/agent-worker.ts <roomId> <name>
 */
import { pathToFileURL } from "node:url";
import { FileEpochStore, connect, readyRoom } from "@unibus/sdk";
import type { EpochStore, UnibusClient } from "@unibus/sdk";
import { loadIdentityFile } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";

/** A request addressed to an agent. */
export interface AgentRequest {
  to: string;
  /** Correlates the answer with the request. */
  id?: string;
  text?: string;
}

/** What a handler gets: the request and its proven sender. */
export interface AgentCall {
  readonly request: AgentRequest;
  readonly sender: string;
}

/** Turns one request into the fields of its answer. */
export type AgentHandler = (call: AgentCall) => Promise<Record<string, unknown>> | Record<string, unknown>;

/** A running worker. */
export interface AgentWorker {
  /** Requests handled so far. */
  readonly handled: number;
  stop(): Promise<void>;
}

/** Uppercases the text and counts requests: the example's behaviour. */
export function upperCaseHandler(): AgentHandler {
  let count = 0;
  return ({ request }) => ({ text: (request.text ?? "").toUpperCase(), count: ++count });
}

/**
 * Serves `agent.<name>.in` requests of room `roomId` with `handler`. The
 * identity must be a member of the room; `readyRoom` does the rest (room
 * grant, agreement key, waiting for a key epoch) and reports each stage to
 * `onStage`. `epochStore` keeps the highest verified epoch across restarts,
 * so a keys service cannot roll this agent back to an older key.
 */
export async function startAgentWorker(opts: {
  client: UnibusClient;
  identity: Identity;
  roomId: string;
  name: string;
  handler: AgentHandler;
  epochStore?: EpochStore;
  onStage?: (stage: string, text: string) => void;
}): Promise<AgentWorker> {
  const { client, identity, roomId, name, handler } = opts;
  const inbox = `agent.${name}.in`;
  const outbox = `agent.${name}.out`;
  const { room } = await readyRoom(client, identity, roomId, {
    ...(opts.epochStore === undefined ? {} : { epochStore: opts.epochStore }),
    ...(opts.onStage === undefined ? {} : { onStage: opts.onStage }),
  });
  const sub = room.subscribe();
  await room.flush();
  let handled = 0;
  const loop = (async () => {
    for await (const m of sub) {
      let request: AgentRequest;
      try {
        request = m.json<AgentRequest>();
      } catch {
        continue; // Not JSON: ordinary chat, not for us.
      }
      if (request.to !== inbox) continue;
      const answer = await Promise.resolve(handler({ request, sender: m.sender })).catch((err: unknown) => ({ error: (err as Error).message }));
      await room.publish({ ...answer, to: outbox, ...(request.id === undefined ? {} : { id: request.id }), replyTo: m.sender });
      handled++;
    }
  })();
  return {
    get handled() {
      return handled;
    },
    async stop() {
      sub.stop();
      await loop;
      await room.close();
    },
  };
}

async function main(): Promise<void> {
  const [roomId, name] = process.argv.slice(2);
  const url = process.env.UNIBUS_URL;
  const idPath = process.env.UNIBUS_IDENTITY;
  if (roomId === undefined || name === undefined || url === undefined || idPath === undefined) {
    process.stderr.write("usage: UNIBUS_URL=… UNIBUS_IDENTITY=… agent-worker.ts <roomId> <name>\n");
    process.exitCode = 2;
    return;
  }
  const identity = await loadIdentityFile(idPath);
  const client = await connect({ url, identity, name: `agent ${name}` });
  const worker = await startAgentWorker({
    client,
    identity,
    roomId,
    name,
    handler: upperCaseHandler(),
    epochStore: new FileEpochStore(`${idPath}.epochs.json`),
    onStage: (_stage, text) => process.stderr.write(`agent ${name}: ${text}\n`),
  });
  process.stderr.write(`agent ${name} serving agent.${name}.in in room ${roomId}\n`);
  const stop = (): void => void worker.stop().finally(() => void client.close());
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
