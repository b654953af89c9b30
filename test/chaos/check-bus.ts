// The bus both `unibus check --cluster` suites run against: a real 3-node
// cluster (TLS routes) with the production callout, membership and keys
// services, and the admin identity written where the CLI reads it.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll } from "vitest";
import { writeIdentityFile } from "@unibus/crypto";
import { createKeysService } from "@unibus/keys";
import { startTestBus } from "@unibus/testbus";
import type { TestBus } from "@unibus/testbus";

/** What a suite reads once its `beforeAll` has run. */
export interface CheckBus {
  bus: TestBus;
  /** Scratch dir holding admin.id; the CLI's cwd. */
  dir: string;
  /** UNIBUS_URL (every seed) and UNIBUS_IDENTITY for the CLI. */
  env: Record<string, string>;
}

/** Registers the suite's beforeAll/afterAll and returns the (then filled) bus. */
export function useCheckBus(): CheckBus {
  const ctx = {} as CheckBus;
  let keys: { stop(): Promise<void> } | undefined;
  beforeAll(async () => {
    ctx.bus = await startTestBus({ nodes: 3, cluster: { routeTls: true } });
    keys = await createKeysService(await ctx.bus.serviceConnection("keys"), { logger: pino({ level: "silent" }) });
    ctx.dir = await mkdtemp(join(tmpdir(), "unibus-check-cluster-"));
    const identity = join(ctx.dir, "admin.id");
    await writeIdentityFile(identity, ctx.bus.adminIdentity);
    ctx.env = { UNIBUS_URL: ctx.bus.cluster!.urls.join(","), UNIBUS_IDENTITY: identity };
  }, 120_000);
  afterAll(async () => {
    await keys?.stop();
    await ctx.bus?.stop();
    if (ctx.dir !== undefined) await rm(ctx.dir, { recursive: true, force: true });
  });
  return ctx;
}
