import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { nativeSodiumPath } from "./native-sodium.js";

/**
 * A pool of worker threads for bulk public-key work (signature batches,
 * sealing one room key to many members), so a cold rekey's thousands of
 * Ed25519 checks and X25519 agreements use every core while the event loop
 * stays free for the membership log. Jobs wait in one queue here, urgent
 * first (a log page the caller waits on goes ahead of sealing already
 * queued), and each worker holds two at most, so every worker gets work as
 * soon as it is ready and none idles while the main thread is busy and
 * cannot hand out more.
 *
 * Fail closed: a worker that errors or exits rejects its jobs and every job
 * still queued, and the pool is never used again; callers then do the work
 * inline, so a check is true only when a verification said so and a box is
 * sealed only after its check verified.
 */

/**
 * Most workers. One core is left to the main thread, which verifies the log
 * and seals the slices no worker has taken: a worker per core as well
 * oversubscribed a 2-core box (measured there, a cold rekey used more CPU,
 * mostly the second thread's start, and finished no sooner).
 */
const POOL_MAX_WORKERS = 4;

/** What the worker needs from the main thread: where the pure-JS primitives of the sealed box live, and libsodium if it loaded there. */
function moduleUrls(): WorkerModules {
  const require = createRequire(import.meta.url);
  return {
    blake3: pathToFileURL(require.resolve("blake3-jit")).href,
    chacha: pathToFileURL(require.resolve("@noble/ciphers/chacha.js")).href,
    ...(native && nativeSodiumPath !== undefined ? { sodium: nativeSodiumPath } : {}),
  };
}

interface WorkerModules {
  blake3: string;
  chacha: string;
  /** sodium-native's path: Ed25519 checks through libsodium (same answers: the caller applied its encoding rules first). */
  sodium?: string;
}

/**
 * The worker: plain CommonJS over node:crypto, plus the sealed box's BLAKE3
 * KDF (blake3-jit, prepared once per context, as sealed-box.ts derives) and
 * @noble's HChaCha20 (both imported by absolute URL), so it starts without the
 * application's loaders, and sodium-native by path when the main thread
 * loaded it (Ed25519 checks at about half node:crypto's cost; the main
 * thread applies libsodium's encoding rules before posting a check, so both
 * paths answer alike; X25519 and XChaCha20-Poly1305 for the boxes, the same
 * functions). `verify` answers one byte per check; `seal` checks
 * each recipient's binding first and seals only where it verified (status 1),
 * 2 where it verified but the key is unusable, 0 where it did not verify.
 * The sealing repeats sealed-box.ts byte for byte (its tests compare them).
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const crypto = require("node:crypto");
const keys = new Map();
function edKey(pk) {
  const x = Buffer.from(pk.buffer, pk.byteOffset, 32).toString("base64url");
  let key = keys.get(x);
  if (key === undefined) {
    key = crypto.createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
    if (keys.size > 4096) keys.clear();
    keys.set(x, key);
  }
  return key;
}
// Members' agreement keys, kept like the main thread's (x25519.ts): a
// rekey seals to the same keys again, and an import costs a third of an agreement.
const xKeys = new Map();
function xKey(rpk) {
  const x = Buffer.from(rpk.buffer, rpk.byteOffset, 32).toString("base64url");
  let key = xKeys.get(x);
  if (key === undefined) {
    key = crypto.createPublicKey({ key: { kty: "OKP", crv: "X25519", x }, format: "jwk" });
    if (xKeys.size > 4096) xKeys.clear();
    xKeys.set(x, key);
  }
  return key;
}
let sodium;
if (workerData.sodium !== undefined) {
  try {
    const s = require(workerData.sodium);
    if (typeof s.crypto_sign_verify_detached === "function") sodium = s;
  } catch {
    sodium = undefined;
  }
}
const view = (b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
// Sealing through libsodium too when it has the calls: its X25519 and
// XChaCha20-Poly1305 are the same functions (the tests compare the boxes
// byte for byte) at a fraction of the cost of node:crypto's per-box key
// import, agreement and cipher set-up beside the JavaScript HChaCha20.
const sodiumSeal =
  sodium !== undefined &&
  typeof sodium.crypto_scalarmult === "function" &&
  typeof sodium.crypto_scalarmult_base === "function" &&
  typeof sodium.crypto_aead_xchacha20poly1305_ietf_encrypt === "function"
    ? sodium
    : undefined;
function verifyOne(pk, sig, data) {
  try {
    if (sodium !== undefined) return sodium.crypto_sign_verify_detached(view(sig), view(data), view(pk));
    return crypto.verify(null, data, edKey(pk), sig);
  } catch {
    return false;
  }
}
function verifyBatch({ blob, ends }) {
  const out = new Uint8Array(ends.length);
  let o = 0;
  for (let i = 0; i < ends.length; i++) {
    out[i] = verifyOne(blob.subarray(o, o + 32), blob.subarray(o + 32, o + 96), blob.subarray(o + 96, ends[i])) ? 1 : 0;
    o = ends[i];
  }
  return { out };
}
const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
const PKCS8_X25519_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");
let createDeriveKey;
let hchacha;
const kdfs = new Map();
const scrub = new Uint8Array(96);
function sealBatch({ plaintext, blob, ends, ephemeralSecret, kdfContext }) {
  let kdf = kdfs.get(kdfContext);
  if (kdf === undefined) {
    kdf = createDeriveKey(kdfContext);
    kdfs.set(kdfContext, kdf);
  }
  const native = sodiumSeal;
  let epk;
  let agree;
  // The ephemeral secret as bytes (libsodium only), zeroed when the batch is done.
  let esk;
  if (native !== undefined) {
    esk = Buffer.alloc(32);
    if (ephemeralSecret === undefined) crypto.randomFillSync(esk);
    else {
      esk.set(ephemeralSecret);
      ephemeralSecret.fill(0);
    }
    epk = Buffer.alloc(32);
    native.crypto_scalarmult_base(epk, esk);
    // Throws where the result is all zeros (a low-order key): no box.
    agree = (rpk) => {
      const out = Buffer.alloc(32);
      native.crypto_scalarmult(out, esk, view(rpk));
      return out;
    };
  } else {
    let privateKey;
    let publicKey;
    if (ephemeralSecret === undefined) {
      ({ privateKey, publicKey } = crypto.generateKeyPairSync("x25519"));
    } else {
      const der = Buffer.concat([PKCS8_X25519_PREFIX, ephemeralSecret]);
      privateKey = crypto.createPrivateKey({ key: der, format: "der", type: "pkcs8" });
      publicKey = crypto.createPublicKey(privateKey);
      der.fill(0);
      ephemeralSecret.fill(0);
    }
    epk = Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url");
    agree = (rpk) => crypto.diffieHellman({ privateKey, publicKey: xKey(rpk) });
  }
  const header = new Uint8Array(33);
  header[0] = 1;
  header.set(epk, 1);
  const boxLength = 33 + plaintext.byteLength + 16;
  const status = new Uint8Array(ends.length);
  const boxes = new Uint8Array(boxLength * ends.length);
  const material = new Uint8Array(96);
  const k32 = new Uint32Array(8);
  const n32 = new Uint32Array(4);
  const sub32 = new Uint32Array(8);
  const subkey = new Uint8Array(sub32.buffer);
  const nonce12 = new Uint8Array(12);
  let o = 0;
  for (let i = 0; i < ends.length; i++) {
    const verify = blob[o] === 1;
    const rpk = blob.subarray(o + 1, o + 33);
    const pk = blob.subarray(o + 33, o + 65);
    const sig = blob.subarray(o + 65, o + 129);
    const data = blob.subarray(o + 129, ends[i]);
    o = ends[i];
    // The binding first: a key nobody verified never gets a box.
    if (verify && !verifyOne(pk, sig, data)) continue;
    status[i] = 2;
    let shared;
    try {
      shared = agree(rpk);
    } catch {
      continue;
    }
    let acc = 0;
    for (const b of shared) acc |= b;
    if (acc === 0) continue;
    material.set(shared, 0);
    material.set(epk, 32);
    material.set(rpk, 64);
    shared.fill(0);
    const okm = kdf.reset().update(material).finalize(56);
    // The prepared hasher keeps its last block and output until its next use: zeros now, so no box's secret stays in it.
    kdf.reset().update(scrub).finalize(56).fill(0);
    const at = i * boxLength;
    if (native !== undefined) {
      boxes.set(header, at);
      const sealed = Buffer.from(boxes.buffer, boxes.byteOffset + at + 33, plaintext.byteLength + 16);
      native.crypto_aead_xchacha20poly1305_ietf_encrypt(sealed, view(plaintext), view(header), null, view(okm.subarray(32, 56)), view(okm.subarray(0, 32)));
      okm.fill(0);
      status[i] = 1;
      continue;
    }
    new Uint8Array(k32.buffer).set(okm.subarray(0, 32));
    new Uint8Array(n32.buffer).set(okm.subarray(32, 48));
    nonce12.set(okm.subarray(48, 56), 4);
    okm.fill(0);
    hchacha(SIGMA, k32, n32, sub32);
    const cipher = crypto.createCipheriv("chacha20-poly1305", subkey, nonce12, { authTagLength: 16 });
    cipher.setAAD(header, { plaintextLength: plaintext.byteLength });
    const body = cipher.update(plaintext);
    cipher.final();
    boxes.set(header, at);
    boxes.set(body, at + 33);
    boxes.set(cipher.getAuthTag(), at + 33 + plaintext.byteLength);
    status[i] = 1;
  }
  material.fill(0);
  esk?.fill(0);
  k32.fill(0);
  n32.fill(0);
  sub32.fill(0);
  plaintext.fill(0);
  return { status, boxes, boxLength };
}
// HChaCha20 in JavaScript seals only where libsodium did not load: @noble/ciphers is loaded only then (a few ms of every worker's start).
Promise.all([import(workerData.blake3), sodiumSeal === undefined ? import(workerData.chacha) : undefined]).then(
  ([h, c]) => {
    createDeriveKey = h.createDeriveKey;
    hchacha = c?.hchacha;
    // Jobs queue here too, urgent first; one runs per turn, so messages
    // that arrived meanwhile (an urgent job) are seen before the next.
    const urgent = [];
    const bulk = [];
    let scheduled = false;
    const pump = () => {
      scheduled = false;
      const job = urgent.shift() ?? bulk.shift();
      if (job === undefined) return;
      let reply;
      try {
        reply = job.kind === "seal" ? sealBatch(job) : verifyBatch(job);
      } catch (err) {
        reply = { failed: String(err) };
      }
      parentPort.postMessage({ id: job.id, ...reply });
      if (urgent.length + bulk.length > 0) {
        scheduled = true;
        setImmediate(pump);
      }
    };
    parentPort.on("message", (job) => {
      (job.urgent ? urgent : bulk).push(job);
      if (!scheduled) {
        scheduled = true;
        setImmediate(pump);
      }
    });
    parentPort.postMessage({ id: -1 });
  },
  (err) => process.nextTick(() => { throw err; }),
);
`;

/** A job for the pool: the message to post (with `id` added), and what to transfer. */
export interface PoolJob {
  readonly message: Record<string, unknown>;
  readonly transfer: ArrayBuffer[];
}

interface Queued {
  job: PoolJob;
  urgent: boolean;
  resolve: (reply: Record<string, unknown>) => void;
  reject: (err: unknown) => void;
  /** The same work on this thread, giving the reply a worker would: set for urgent jobs the caller's thread may take over. */
  here?: () => Record<string, unknown>;
}

interface PoolWorker {
  worker: Worker;
  ready: boolean;
  /** Jobs posted and not answered yet: each worker holds several, so it never idles while the main thread is busy. */
  pending: Map<number, Queued>;
}

let pool: PoolWorker[] | undefined;
let broken = false;
let source = WORKER_SOURCE;
let size: number | undefined;
let native = true;
let nextId = 0;
/** Jobs no worker holds yet, urgent ones first (each list in arrival order). */
const urgentQueue: Queued[] = [];
const bulkQueue: Queued[] = [];
let readyWaiters: { resolve: (ok: boolean) => void }[] = [];

function breakPool(err: unknown): void {
  // A dead worker answers nothing: its jobs and all queued ones fail (their
  // callers do the work inline), and the pool is not used again.
  broken = true;
  const workers = pool ?? [];
  pool = undefined;
  const failed = [...workers.flatMap((w) => [...w.pending.values()]), ...urgentQueue.splice(0), ...bulkQueue.splice(0)];
  for (const w of workers) {
    w.pending.clear();
    void w.worker.terminate().catch(() => undefined);
  }
  for (const q of failed) q.reject(err);
  for (const r of readyWaiters.splice(0)) r.resolve(false);
}

/**
 * Jobs a worker holds at once: one running, one waiting so it never idles
 * between them. The rest wait here, urgent first, for whichever worker
 * frees up: a worker that became ready first must not take every job
 * queued while its siblings were still starting.
 */
const WORKER_HOLD = 2;

/** Posts queued jobs, urgent first, to ready workers holding fewer than {@link WORKER_HOLD}, the least loaded first. */
function dispatch(): void {
  for (;;) {
    const queue = urgentQueue.length > 0 ? urgentQueue : bulkQueue;
    if (queue.length === 0) return;
    let best: PoolWorker | undefined;
    for (const w of pool ?? []) if (w.ready && w.pending.size < WORKER_HOLD && (best === undefined || w.pending.size < best.pending.size)) best = w;
    if (best === undefined) return;
    const q = queue.shift()!;
    const id = nextId++;
    best.pending.set(id, q);
    // Referenced while a job is out, so a process waiting only on it does not exit.
    best.worker.ref();
    best.worker.postMessage({ ...q.job.message, id, urgent: q.urgent }, q.job.transfer);
  }
}

function startWorker(urls: WorkerModules): PoolWorker {
  const w: PoolWorker = { worker: new Worker(source, { eval: true, workerData: urls, execArgv: [] }), ready: false, pending: new Map() };
  w.worker.unref();
  w.worker.on("message", (reply: Record<string, unknown> & { id: number }) => {
    if (reply.id === -1) {
      w.ready = true;
      // Again now: the unref made before the thread was up did not hold, and
      // a process that only warmed the pool (no job yet) never exited.
      if (w.pending.size === 0) w.worker.unref();
      dispatch();
      if (pool?.every((x) => x.ready) === true) for (const r of readyWaiters.splice(0)) r.resolve(true);
      return;
    }
    const done = w.pending.get(reply.id);
    w.pending.delete(reply.id);
    if (w.pending.size === 0) w.worker.unref();
    dispatch();
    if (typeof reply.failed === "string") done?.reject(new Error(reply.failed));
    else done?.resolve(reply);
  });
  // Only a worker of the current pool can break it (one stopped with an old pool exits later).
  const fail = (err: unknown): void => {
    if (pool?.includes(w) === true) breakPool(err);
  };
  w.worker.on("error", fail);
  w.worker.on("exit", (code) => fail(new Error(`crypto pool worker exited with code ${code}`)));
  return w;
}

function workers(): PoolWorker[] | undefined {
  if (broken) return undefined;
  if (pool === undefined) {
    try {
      const urls = moduleUrls();
      const n = size ?? Math.max(1, Math.min(POOL_MAX_WORKERS, availableParallelism() - 1));
      pool = [];
      for (let i = 0; i < n; i++) pool.push(startWorker(urls));
    } catch (err) {
      breakPool(err);
      return undefined;
    }
  }
  return pool;
}

/** Number of workers (0 when the pool failed); starts them if needed. */
export function poolSize(): number {
  return workers()?.length ?? 0;
}

/**
 * Runs `job` on the next free worker; `urgent` jobs go ahead of queued ones.
 * Rejects when the pool is broken or breaks before answering.
 */
export function runOnPool(job: PoolJob, urgent = false, here?: () => Record<string, unknown>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    if (workers() === undefined) return reject(new Error("crypto pool unavailable"));
    (urgent ? urgentQueue : bulkQueue).push({ job, urgent, resolve, reject, ...(urgent && here !== undefined ? { here } : {}) });
    dispatch();
  });
}

/** Runs the newest queued urgent job that can run here; false when there is none. */
function takeOne(): boolean {
  let i = urgentQueue.length - 1;
  while (i >= 0 && urgentQueue[i]!.here === undefined) i--;
  if (i < 0) return false;
  const q = urgentQueue.splice(i, 1)[0]!;
  let reply: Record<string, unknown> | undefined;
  try {
    reply = q.here!();
  } catch (err) {
    q.reject(err);
  }
  if (reply !== undefined) q.resolve(reply);
  return true;
}

/**
 * For a caller that would otherwise only wait on the pool (a log sync
 * waiting on a slice's checks): until `until` settles, this thread takes
 * the urgent jobs that can run here and that no worker holds yet, one per
 * turn of its event loop (replies and I/O are handled between two), newest
 * first. The workers take the oldest, so the two meet in the middle of a
 * batch instead of this thread idling until a worker reaches its end (a
 * cold rekey's owner thread did, for much of the log's verification). The
 * answers are the same either way. Bulk jobs are never taken here. Only
 * while the caller waits: taking jobs as soon as they are queued would
 * also slow whatever else this thread must do first (the next page's
 * reply, say). Never rejects.
 */
export async function helpCryptoPoolUntil(until: Promise<unknown>): Promise<void> {
  let settled = false;
  void until.then(
    () => (settled = true),
    () => (settled = true),
  );
  helping++;
  try {
    for (;;) {
      // Nothing to take (the usual case once the pool keeps up): no turn of the event loop is spent here.
      if (!urgentQueue.some((q) => q.here !== undefined)) return;
      await new Promise((r) => setImmediate(r));
      if (settled || !takeOne()) return;
    }
  } finally {
    helping--;
  }
}

/** Callers inside {@link helpCryptoPoolUntil} now. */
let helping = 0;

/**
 * True while this thread has urgent pool work to do: a caller helping
 * with its own checks, or urgent jobs queued that it could take. Work
 * that can wait (sealing before the log is verified) runs on this thread
 * only while this is false, so it fills the time the thread would idle
 * and never holds up a check a caller waits on. Not exported from the package.
 */
export function urgentWorkHere(): boolean {
  return helping > 0 || urgentQueue.some((q) => q.here !== undefined);
}

/**
 * Starts the pool now and resolves once every worker is ready: true, or
 * false when the pool could not start (the work then runs inline). For a
 * process about to do bulk work (a rekey, a long log sync), so the workers'
 * start-up overlaps its network round trips instead of delaying its first
 * batch. Never rejects.
 */
export function warmCryptoPool(): Promise<boolean> {
  const ws = workers();
  if (ws === undefined) return Promise.resolve(false);
  if (ws.every((w) => w.ready)) return Promise.resolve(true);
  return new Promise((resolve) => readyWaiters.push({ resolve }));
}

/**
 * For tests only (not exported from the package): stops the pool and makes
 * the next one from `source` (default: the real worker) with `size` workers
 * (default: one per core but one, 1 to 4), so a test can make a worker crash and
 * check that everything still fails closed; `native: false` keeps the
 * workers on node:crypto even where sodium-native loads.
 */
export async function resetCryptoPoolForTests(opts: { source?: string; size?: number; native?: boolean } = {}): Promise<void> {
  const old = pool ?? [];
  pool = undefined;
  broken = false;
  urgentQueue.splice(0);
  bulkQueue.splice(0);
  readyWaiters = [];
  for (const w of old) {
    w.worker.removeAllListeners();
    await w.worker.terminate();
  }
  source = opts.source ?? WORKER_SOURCE;
  size = opts.size;
  native = opts.native ?? true;
}
