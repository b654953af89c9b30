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
import type { RunningKeysService } from "@unibus/keys";
import { startTestBus } from "@unibus/testbus";
import type { TestBus } from "@unibus/testbus";

/** What a suite reads once its `beforeAll` has run. */
export interface CheckBus {
  bus: TestBus;
  /** Scratch dir holding admin.id; the CLI's cwd. */
  dir: string;
  /** UNIBUS_URL (every seed) and UNIBUS_IDENTITY for the CLI. */
  env: Record<string, string>;
  /** The keys service (its buckets R3, as every service's in a cluster). */
  keys: RunningKeysService;
}

/** Registers the suite's beforeAll/afterAll and returns the (then filled) bus. */
export function useCheckBus(): CheckBus {
  const ctx = {} as CheckBus;
  let keys: RunningKeysService | undefined;
  beforeAll(async () => {
    // The operator user moves stream leaders (the failover test makes the node it kills lead every control-plane bucket).
    ctx.bus = await startTestBus({ nodes: 3, cluster: { routeTls: true }, operator: true });
    // R3 as in production (UNIBUS_JS_REPLICAS=3): with the default of one
    // replica, `room_keys` lived on a single node, and when --chaos killed
    // that node the keys service could never read a share again.
    keys = await createKeysService(await ctx.bus.serviceConnection("keys"), { logger: pino({ level: "silent" }), bucketReplicas: 3 });
    ctx.keys = keys;
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
