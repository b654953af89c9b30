import { Subjects } from "@unibus/contracts";
import type {
  KeysAgreementKeysReply,
  KeysEpochsReply,
  KeysGetShareReply,
  KeysPublishEpochReply,
  KeysPublishEpochRequest,
  KeysRegisterAgreementKeyReply,
} from "@unibus/contracts";
import { toBase64Url } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { agreementKeyStatementBytes } from "./share-set.js";

/** Timeout of `publish_epoch`: a 1,000-member set is ~200 KB and is verified and stored before the reply. */
const PUBLISH_TIMEOUT_MS = 15_000;

/** `unibus.v1.keys.*`: the raw keys-service calls. {@link rekeyRoom} and `KeysServiceKeyring` build on them. */
export class KeysApi {
  constructor(private readonly send: <T>(subject: string, body: unknown, opts?: { timeoutMs?: number }) => Promise<T>) {}

  /** Registers `identity`'s X25519 agreement key, self-signed so the server cannot substitute it. */
  registerAgreementKey(identity: Identity): Promise<KeysRegisterAgreementKeyReply> {
    const signature = identity.signingKey.sign(agreementKeyStatementBytes(identity.principal, identity.agreementPublicKey));
    return this.send(Subjects.keys.registerAgreementKey, { agreementKey: toBase64Url(identity.agreementPublicKey), signature: toBase64Url(signature) });
  }

  /** A room's current members with their (unverified) agreement-key bindings. */
  agreementKeys(roomId: string): Promise<KeysAgreementKeysReply> {
    return this.send(Subjects.keys.agreementKeys, { roomId });
  }

  /** Stores a signed share set as epoch `req.epoch`; 409 if another rekey won or the membership changed. */
  publishEpoch(req: KeysPublishEpochRequest): Promise<KeysPublishEpochReply> {
    return this.send(Subjects.keys.publishEpoch, req, { timeoutMs: PUBLISH_TIMEOUT_MS });
  }

  /** The caller's own sealed share of `epoch` (default: newest), with its Merkle proof. Unverified. */
  getShare(roomId: string, epoch?: number): Promise<KeysGetShareReply> {
    return this.send(Subjects.keys.getShare, epoch === undefined ? { roomId } : { roomId, epoch });
  }

  /** A room's epochs and a summary of the newest. */
  epochs(roomId: string): Promise<KeysEpochsReply> {
    return this.send(Subjects.keys.epochs, { roomId });
  }
}
