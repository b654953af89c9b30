// A request settles by its timeout even while the client is reconnecting: a
// caller that set requestTimeoutMs must not hang for the whole reconnect
// (a node that is down, a cluster losing a member) before it can fail over.
import { afterEach, expect, it } from "vitest";
import { ErrorCode, ErrorReason, Subjects, UnibusError } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { connect } from "./client.js";
import type { UnibusClient } from "./client.js";

let server: TestServer | undefined;
let client: UnibusClient | undefined;

afterEach(async () => {
  await client?.close();
  await server?.stop();
  client = server = undefined;
});

/** Resolves at the client's first status event of `type`. */
async function nextStatus(c: UnibusClient, type: string): Promise<void> {
  for await (const s of c.status()) if (s.type === type) return;
}

/** How long `p` took to reject, and with what. */
async function rejection(p: Promise<unknown>): Promise<{ err: unknown; ms: number }> {
  const t0 = performance.now();
  const err = await p.then(
    () => new Error("resolved"),
    (e: unknown) => e,
  );
  return { err, ms: performance.now() - t0 };
}

const retryable = { code: ErrorCode.Unavailable, reason: ErrorReason.ConnectionLost };

it("a request sent while the server is down rejects by its timeout with a retryable 503", async () => {
  server = await startTestServer({ jetstream: false });
  client = await connect({ url: server.url, identity: SigningKey.generate(), requestTimeoutMs: 1_000 });
  const down = nextStatus(client, "disconnect");
  await server.halt();
  await down;
  // A mutation (resent on reconnect) and a read (resent freshly signed) both stop at the deadline.
  for (const subject of ["t.mutate", Subjects.membership.roomsGet]) {
    const { err, ms } = await rejection(client.request(subject, {}));
    expect(err, subject).toBeInstanceOf(UnibusError);
    expect(err, subject).toMatchObject(retryable);
    expect(ms, subject).toBeGreaterThan(900);
    expect(ms, subject).toBeLessThan(1_500);
  }
});

it("a request in flight when the connection drops rejects by its timeout, not after the reconnect window", async () => {
  server = await startTestServer({ jetstream: false });
  client = await connect({ url: server.url, identity: SigningKey.generate(), requestTimeoutMs: 1_000 });
  // A responder that takes the request but never answers: the request is in flight when the server goes.
  const silent = await server.connect();
  const taken = new Promise<void>((resolve) => silent.subscribe("t.silent", { callback: () => resolve() }));
  await silent.flush();
  const pending = rejection(client.request("t.silent", {}));
  await taken;
  await server.halt();
  const { err, ms } = await pending;
  expect(err).toBeInstanceOf(UnibusError);
  expect(err).toMatchObject(retryable);
  expect(ms).toBeLessThan(1_500);
});
