import type { Msg, Subscription } from "@nats-io/transport-node";
import { Subjects } from "@unibus/contracts";
import {
  constantTimeEqual,
  deriveClusterKeys,
  envelopeFromHeaders,
  fromBase64Url,
  fromHex,
  generateAgreementKeyPair,
  openSealed,
  publicKeyFromPrincipal,
  sealTo,
  seedAnswerBytes,
  seedRequestHash,
  signEnvelope,
  toBase64Url,
  toHex,
  verifyDetached,
  verifyEnvelope,
} from "@unibus/crypto";
import { ENVELOPE_WINDOW_MS } from "@unibus/kit";
import { envelopeHeaders } from "@unibus/sdk";
import type { VerifiedClusterHistory } from "@unibus/sdk";
import type { ClusterCore, LifecycleDeps } from "./handlers/lifecycle.js";

/** What a fresh replica asks with: its principal and a one-time X25519 key the seed is sealed to. */
interface SeedRequest {
  principal: string;
  ephemeralKey: string;
}

/** A peer's answer: the seed sealed to the ephemeral key, signed by the peer's service identity over the request. */
interface SeedAnswer {
  responder: string;
  sealed: string;
  signature: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * Answers peers' seed requests on a plain subscription (every replica hears
 * each request; only one that holds the seed answers). A request is answered
 * only when its envelope is fresh and signed by a gateway the current
 * manifest (genesis, then gateway changes) lists, so a stolen node identity or a rogue service cannot collect
 * the seed; the answer is sealed to the requester's ephemeral key and signed,
 * so a replayed request gains nothing.
 */
export function answerSeedRequests(core: ClusterCore): Subscription {
  const { deps } = core;
  const logger = deps.logger.child({ op: "seed.answer" });
  return deps.nc.subscribe(Subjects.replicaGateway.seedRequest, {
    callback: (err, msg) => {
      if (err !== null) return;
      void answer(core, msg).catch((e: unknown) => logger.warn({ err: e instanceof Error ? e.message : String(e) }, "seed request not answered"));
    },
  });
}

async function answer(core: ClusterCore, msg: Msg): Promise<void> {
  const { deps } = core;
  const logger = deps.logger.child({ op: "seed.answer" });
  const seed = core.seed;
  if (seed === undefined || msg.reply === undefined) return;
  const envelope = envelopeFromHeaders((n) => msg.headers?.get(n) ?? "");
  if (envelope === undefined || !verifyEnvelope(envelope, msg.subject, msg.data) || Math.abs(deps.now() - envelope.timestamp) > ENVELOPE_WINDOW_MS) {
    logger.warn({}, "seed request with a bad or stale signature refused");
    return;
  }
  let req: SeedRequest;
  try {
    req = JSON.parse(dec.decode(msg.data)) as SeedRequest;
  } catch {
    return;
  }
  if (req.principal !== envelope.signer || typeof req.ephemeralKey !== "string" || !/^[0-9a-f]{64}$/.test(req.ephemeralKey)) return;
  // No check against this replica's own principal: replicas may share one identity, and a replica asking holds no seed to answer itself with.
  const log = await core.store.load(core.keys);
  if (log.genesis === undefined || !log.gateways.includes(envelope.signer)) {
    logger.warn({ requester: envelope.signer }, "seed request from a principal the manifest does not list as a gateway refused");
    return;
  }
  const sealed = sealTo(fromHex(req.ephemeralKey), seed);
  const signature = deps.identity.sign(seedAnswerBytes(seedRequestHash(msg.data), deps.identity.principal, sealed));
  msg.respond(enc.encode(JSON.stringify({ responder: deps.identity.principal, sealed: toBase64Url(sealed), signature: toHex(signature) } satisfies SeedAnswer)));
  logger.info({ requester: envelope.signer }, "cluster seed handed to a gateway peer");
}

/**
 * Asks the live peers for the seed. Accepts an answer only from a gateway
 * the current manifest lists, signed over this very request, and only a seed
 * whose derived history key is the genesis key. Null when nobody valid answered in time.
 */
export async function requestSeedFromPeers(deps: LifecycleDeps, log: VerifiedClusterHistory): Promise<Uint8Array | null> {
  const genesis = log.genesis;
  if (genesis === undefined) return null;
  const ephemeral = generateAgreementKeyPair();
  const data = enc.encode(JSON.stringify({ principal: deps.identity.principal, ephemeralKey: toHex(ephemeral.publicKey) } satisfies SeedRequest));
  const subject = Subjects.replicaGateway.seedRequest;
  const headers = envelopeHeaders(signEnvelope(deps.identity, subject, data, deps.now()));
  const requestHash = seedRequestHash(data);
  let replies: AsyncIterable<Msg>;
  try {
    replies = await deps.nc.requestMany(subject, data, { headers, maxWait: deps.seedWaitMs ?? 2_000, strategy: "timer" });
  } catch {
    return null;
  }
  try {
    for await (const m of replies) {
      let a: SeedAnswer;
      try {
        a = JSON.parse(dec.decode(m.data)) as SeedAnswer;
        if (typeof a.responder !== "string" || typeof a.sealed !== "string" || typeof a.signature !== "string") continue;
      } catch {
        continue;
      }
      if (!log.gateways.includes(a.responder)) {
        deps.logger.warn({ op: "seed.request", responder: a.responder }, "seed answer from a principal the manifest does not list ignored");
        continue;
      }
      try {
        const sealed = fromBase64Url(a.sealed);
        if (!verifyDetached(publicKeyFromPrincipal(a.responder), seedAnswerBytes(requestHash, a.responder, sealed), fromHex(a.signature))) continue;
        const seed = openSealed(ephemeral.secretKey, sealed);
        if (seed.byteLength !== 32) continue;
        if (!constantTimeEqual(deriveClusterKeys(seed).historyKey.publicKey, fromHex(genesis.historyKey))) continue;
        return seed;
      } catch {
        continue;
      }
    }
  } catch {
    return null;
  }
  return null;
}

