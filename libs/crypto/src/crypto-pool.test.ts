import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { eventually } from "@unibus/testing";
import { helpCryptoPoolUntil, poolSize, resetCryptoPoolForTests, runOnPool, warmCryptoPool } from "./crypto-pool.js";
import { SigningKey, alreadyVerified, verifyMany, verifySignature } from "./ed25519.js";
import { randomBytes, toHex } from "./encoding.js";
import { openSealed, sealToVerified, sealToVerifiedWith, sealWithEphemeralSecret } from "./sealed-box.js";
import type { BoundRecipient } from "./sealed-box.js";
import { generateAgreementKeyPair } from "./x25519.js";

/** Members with an agreement key each and its binding (the statement is any bytes here: the key itself). */
function people(n: number) {
  return Array.from({ length: n }, () => {
    const signer = SigningKey.generate();
    const agreement = generateAgreementKeyPair();
    const recipient: BoundRecipient = { agreementKey: agreement.publicKey, binding: { publicKey: signer.publicKey, data: agreement.publicKey, signature: signer.sign(agreement.publicKey) } };
    return { signer, agreement, recipient };
  });
}

/** A set where some bindings must get nothing: a substituted key, a forged signature, a low-order key, a short key. */
function hostileSet(n: number) {
  const ps = people(n);
  const attacker = generateAgreementKeyPair();
  const recipients = ps.map((p) => p.recipient);
  // The member's signature over its own key, but the attacker's key to seal to (refused unchecked: the statement names another key).
  recipients[3] = { ...recipients[3]!, agreementKey: attacker.publicKey };
  // The attacker's key and a statement about it, signed by someone else.
  recipients[11] = { agreementKey: attacker.publicKey, binding: { ...recipients[11]!.binding, data: attacker.publicKey } };
  // A low-order key the member did sign: verified, but no box.
  const lowOrder = new Uint8Array(32);
  recipients[13] = { agreementKey: lowOrder, binding: { publicKey: ps[13]!.signer.publicKey, data: lowOrder, signature: ps[13]!.signer.sign(lowOrder) } };
  recipients[17] = { ...recipients[17]!, agreementKey: new Uint8Array(31) };
  return { ps, recipients, refused: new Set([3, 11, 13, 17]) };
}

async function expectSealedOnlyToVerified(n: number): Promise<void> {
  const { ps, recipients, refused } = hostileSet(n);
  const pt = randomBytes(32);
  const sealed = await sealToVerified(recipients, pt);
  sealed.forEach((s, i) => {
    if (refused.has(i)) expect(s.box, `recipient ${i}`).toBeNull();
    else expect(toHex(openSealed(ps[i]!.agreement.secretKey, s.box!))).toBe(toHex(pt));
  });
  expect(sealed.map((s) => s.verified).filter((v) => !v).length).toBe(3);
  expect(sealed[13]!.verified).toBe(true);
}

afterEach(async () => {
  await resetCryptoPoolForTests();
});

describe("crypto pool: sealing to verified bindings", () => {
  it("warms up once: every worker ready before the first batch", async () => {
    expect(await warmCryptoPool()).toBe(true);
    expect(poolSize()).toBeGreaterThan(0);
    expect(await warmCryptoPool()).toBe(true);
  });

  it("an idle pool keeps no process alive: one that only warmed it exits by itself", async () => {
    const pool = fileURLToPath(new URL("./crypto-pool.ts", import.meta.url));
    const script = `const { warmCryptoPool } = await import(${JSON.stringify(pool)}); console.log("ready", await warmCryptoPool());`;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    // Bounded: a process the pool keeps alive never exits, and the test fails here instead of hanging.
    const code = await new Promise<number | null | "alive">((resolve) => {
      const timer = setTimeout(() => {
        child.kill();
        resolve("alive");
      }, 15_000);
      child.on("exit", (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    expect(out.trim()).toBe("ready true");
    expect(code).toBe(0);
  }, 30_000);

  for (const native of [true, false])
    it(`seals on the workers (${native ? "libsodium" : "node:crypto"}) exactly as inline and as a helping caller (same ephemeral: byte-identical to sealWithEphemeralSecret), and every box opens`, async () => {
      await resetCryptoPoolForTests({ native });
      await sealsAsInline();
    });

  async function sealsAsInline(): Promise<void> {
    const ps = people(200);
    const pt = randomBytes(32);
    const esk = randomBytes(32);
    const pooled = await sealToVerifiedWith(
      ps.map((p) => p.recipient),
      pt,
      { ephemeralSecretKey: esk },
    );
    // The caller takes slices too once it is free (here at once): the same boxes.
    const helped = await sealToVerifiedWith(
      ps.map((p) => p.recipient),
      pt,
      { ephemeralSecretKey: esk, helpAfter: Promise.resolve() },
    );
    const inline = await sealToVerifiedWith(
      ps.map((p) => p.recipient),
      pt,
      { ephemeralSecretKey: esk, inline: true },
    );
    ps.forEach((p, i) => {
      const want = toHex(sealWithEphemeralSecret(p.agreement.publicKey, pt, esk));
      expect(toHex(pooled[i]!.box!)).toBe(want);
      expect(toHex(inline[i]!.box!)).toBe(want);
      expect(toHex(helped[i]!.box!)).toBe(want);
      expect(toHex(openSealed(p.agreement.secretKey, pooled[i]!.box!))).toBe(toHex(pt));
    });
  }

  for (const native of [true, false])
    it(`a substituted key, a forged binding, a low-order and a short key get no box; the others still do (pool on ${native ? "libsodium" : "node:crypto"}, and inline)`, async () => {
      await resetCryptoPoolForTests({ native });
      await expectSealedOnlyToVerified(150);
      await expectSealedOnlyToVerified(20);
    });

  it("a binding that verified once is remembered as verified; a failed one is not", async () => {
    const { recipients } = hostileSet(100);
    await sealToVerified(recipients, randomBytes(32));
    const again = await verifyMany(recipients.map((r) => r.binding));
    expect(again.filter((v) => !v).length).toBe(1);
    expect(again[3]).toBe(true); // the member's own statement: only the key to seal to was swapped
    expect(again[11]).toBe(false);
  });
});

describe("crypto pool: a failing worker fails closed", () => {
  const crashAtStart = `throw new Error("worker start failed");`;
  const crashOnJob = `
const { parentPort } = require("node:worker_threads");
parentPort.on("message", () => process.exit(3));
parentPort.postMessage({ id: -1 });`;
  const failsEachJob = `
const { parentPort } = require("node:worker_threads");
parentPort.on("message", (job) => parentPort.postMessage({ id: job.id, failed: "cannot" }));
parentPort.postMessage({ id: -1 });`;

  for (const [name, source, stays] of [
    ["a worker that cannot start", crashAtStart, false],
    ["a worker that dies on its first job", crashOnJob, false],
    ["a worker that reports each job failed", failsEachJob, true],
  ] as const) {
    it(`${name}: checks are verified and boxes sealed inline, only to verified bindings`, async () => {
      await resetCryptoPoolForTests({ source });
      const keys = Array.from({ length: 4 }, () => SigningKey.generate());
      const checks = Array.from({ length: 200 }, (_, i) => {
        const data = randomBytes(64);
        return { publicKey: keys[i % 4]!.publicKey, data, signature: keys[i % 4]!.sign(data) };
      });
      checks[7] = { ...checks[7]!, signature: checks[8]!.signature };
      const got = await verifyMany(checks);
      expect(got).toEqual(checks.map((c) => verifySignature(c.publicKey, c.data, c.signature)));
      expect(got[7]).toBe(false);
      expect(got.filter(Boolean).length).toBe(199);
      await expectSealedOnlyToVerified(150);
      // A dead worker breaks the pool for good: later batches do not wait on it.
      expect(poolSize() > 0).toBe(stays);
      expect(await warmCryptoPool()).toBe(stays);
    });
  }

  it("warm-up reports a pool that cannot start", async () => {
    await resetCryptoPoolForTests({ source: crashAtStart });
    expect(await warmCryptoPool()).toBe(false);
  });
});

describe("crypto pool: urgent jobs first", () => {
  it("a job a caller waits on goes ahead of bulk jobs queued before it", async () => {
    const echo = `
const { parentPort } = require("node:worker_threads");
let n = 0;
parentPort.on("message", (job) => parentPort.postMessage({ id: job.id, order: n++, name: job.name }));
parentPort.postMessage({ id: -1 });`;
    // One worker, and all three jobs queued before it is ready (the same tick).
    await resetCryptoPoolForTests({ source: echo, size: 1 });
    const job = (name: string) => ({ message: { name }, transfer: [] });
    const replies = await Promise.all([runOnPool(job("bulk-a")), runOnPool(job("bulk-b")), runOnPool(job("urgent"), true)]);
    expect(replies.map((r) => [r.name, r.order])).toEqual([
      ["bulk-a", 1],
      ["bulk-b", 2],
      ["urgent", 0],
    ]);
  });

  it("a worker holds two jobs at most; the rest wait in the pool's queue for whichever worker frees up", async () => {
    // Answers on the next turn, telling how many jobs it had received and not yet answered.
    const counting = `
const { parentPort } = require("node:worker_threads");
let received = 0;
let answered = 0;
parentPort.on("message", (job) => {
  received++;
  setImmediate(() => {
    parentPort.postMessage({ id: job.id, inHand: received - answered });
    answered++;
  });
});
parentPort.postMessage({ id: -1 });`;
    await resetCryptoPoolForTests({ source: counting, size: 1 });
    expect(await warmCryptoPool()).toBe(true);
    const replies = await Promise.all(Array.from({ length: 8 }, () => runOnPool({ message: {}, transfer: [] })));
    expect(Math.max(...replies.map((r) => r.inHand as number))).toBeLessThanOrEqual(2);
  });

  it("a waiting caller takes urgent jobs no worker holds, newest first; held, bulk and jobs without a fallback wait", async () => {
    // Holds whatever it gets and never answers.
    const stalls = `
const { parentPort } = require("node:worker_threads");
parentPort.on("message", () => undefined);
parentPort.postMessage({ id: -1 });`;
    await resetCryptoPoolForTests({ source: stalls, size: 1 });
    expect(await warmCryptoPool()).toBe(true);
    const ran: string[] = [];
    const job = (name: string) => ({ message: { name }, transfer: [] });
    const here = (name: string) => () => {
      ran.push(name);
      return { name };
    };
    // The worker holds two; the rest are queued.
    const waiting = [runOnPool(job("held-1"), true, here("held-1")), runOnPool(job("held-2"), true, here("held-2")), runOnPool(job("no-fallback"), true), runOnPool(job("bulk"), false, here("bulk"))];
    let settled = 0;
    for (const p of waiting) void p.then(() => settled++, () => settled++);
    const urgent = Promise.all([runOnPool(job("u-1"), true, here("u-1")), runOnPool(job("u-2"), true, here("u-2")), runOnPool(job("u-3"), true, here("u-3"))]);
    // Nothing is taken until a caller waits.
    await new Promise((r) => setImmediate(r));
    expect(ran).toEqual([]);
    await helpCryptoPoolUntil(urgent);
    expect((await urgent).map((r) => r.name)).toEqual(["u-1", "u-2", "u-3"]);
    expect(ran).toEqual(["u-3", "u-2", "u-1"]);
    // A fallback that throws fails its own job only (verifyMany then checks inline).
    const throws = runOnPool(job("throws"), true, () => {
      throw new Error("no here");
    });
    await helpCryptoPoolUntil(throws);
    await expect(throws).rejects.toThrow("no here");
    // With nothing left to take, helping returns while the rest still wait.
    await helpCryptoPoolUntil(Promise.all(waiting));
    expect(ran).toEqual(["u-3", "u-2", "u-1"]);
    expect(settled).toBe(0);
    await resetCryptoPoolForTests();
  });

  it("before its own work is done, a caller seals the slices no worker holds only while it has no urgent job to take, and only to verified bindings", async () => {
    // Holds what it gets and never answers, until told to exit (which breaks the pool: its jobs then fail over to inline).
    const stalls = `
const { parentPort, BroadcastChannel } = require("node:worker_threads");
const bc = new BroadcastChannel("crypto-pool-test-exit");
bc.onmessage = () => process.exit(3);
parentPort.on("message", () => undefined);
parentPort.postMessage({ id: -1 });`;
    await resetCryptoPoolForTests({ source: stalls, size: 1 });
    expect(await warmCryptoPool()).toBe(true);
    const exit = new BroadcastChannel("crypto-pool-test-exit");
    try {
      const job = { message: {}, transfer: [] };
      // The worker holds two jobs; an urgent one with a fallback here waits in the queue.
      void runOnPool(job).catch(() => undefined);
      void runOnPool(job).catch(() => undefined);
      const urgent = runOnPool(job, true, () => ({ here: true }));
      // 200 recipients, the hostile ones last: the third slice (128..199) is the one no pool runner takes, so this thread seals it.
      const { ps, recipients, refused } = hostileSet(200);
      const order = recipients.map((_, i) => 199 - i);
      const pt = randomBytes(32);
      const own = new Promise<void>(() => undefined); // the caller's own work (a log sync), never done here
      const sealing = sealToVerifiedWith(
        order.map((i) => recipients[i]!),
        pt,
        { helpAfter: own },
      );
      const mine = order.map((i, at) => ({ i, at })).filter(({ at }) => at >= 128 && !refused.has(order[at]!));
      // A bound on a negative: twenty event-loop turns, in which an ungated caller (one slice of 16 per turn) seals the whole slice.
      for (let k = 0; k < 20; k++) await new Promise((r) => setImmediate(r));
      expect(mine.filter(({ i }) => alreadyVerified(recipients[i]!.binding)).length).toBe(0);
      // Once the urgent job is taken (here), the caller seals while its own work is still pending.
      await helpCryptoPoolUntil(urgent);
      expect(await urgent).toEqual({ here: true });
      await eventually(
        () => mine.filter(({ i }) => alreadyVerified(recipients[i]!.binding)).length,
        (n) => n === mine.length,
        { what: "the caller's slice verified before its own work is done" },
      );
      // The worker dies: the slices it held or would have taken are sealed inline; the result holds a box only for a verified binding.
      exit.postMessage("exit");
      const sealed = await sealing;
      sealed.forEach((s, at) => {
        const i = order[at]!;
        if (refused.has(i)) expect(s.box, `recipient ${i}`).toBeNull();
        else expect(toHex(openSealed(ps[i]!.agreement.secretKey, s.box!))).toBe(toHex(pt));
      });
      expect(sealed.filter((s) => !s.verified).length).toBe(3);
    } finally {
      exit.close();
      await resetCryptoPoolForTests();
    }
  });

  it("verifyMany's slices that a waiting caller takes are answered exactly as verifySignature would", async () => {
    const stalls = `
const { parentPort } = require("node:worker_threads");
parentPort.on("message", () => undefined);
parentPort.postMessage({ id: -1 });`;
    await resetCryptoPoolForTests({ source: stalls, size: 1 });
    expect(await warmCryptoPool()).toBe(true);
    const key = SigningKey.generate();
    const batch = (n: number) =>
      Array.from({ length: n }, () => {
        const data = randomBytes(64);
        return { publicKey: key.publicKey, data, signature: key.sign(data) };
      });
    // Two slices the worker holds and never answers; the next batch's slices can only be answered here.
    void verifyMany(batch(256));
    const checks = batch(256);
    checks[5] = { ...checks[5]!, signature: checks[6]!.signature };
    checks[200] = { ...checks[200]!, data: randomBytes(64) };
    const pending = verifyMany(checks);
    await helpCryptoPoolUntil(pending);
    const got = await pending;
    expect(got).toEqual(checks.map((c) => verifySignature(c.publicKey, c.data, c.signature)));
    expect(got.filter(Boolean).length).toBe(254);
    await resetCryptoPoolForTests();
  });
});
