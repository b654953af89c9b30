import { ErrorCode, ErrorReason, Subjects, UnibusError } from "@unibus/contracts";
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

/** Timeout of `epochs.publish`: a 1,000-member set is ~200 KB and is verified and stored before the reply. */
const PUBLISH_TIMEOUT_MS = 15_000;

/** `unibus.v1.keys.*`: the raw keys-service calls. {@link rekeyRoom} and `KeysServiceKeyring` build on them. */
export class KeysApi {
  constructor(private readonly send: <T>(subject: string, body: unknown, opts?: { timeoutMs?: number }) => Promise<T>) {}

  /** Registers `identity`'s X25519 agreement key, self-signed so the server cannot substitute it. */
  registerAgreementKey(identity: Identity): Promise<KeysRegisterAgreementKeyReply> {
    const signature = identity.signingKey.sign(agreementKeyStatementBytes(identity.principal, identity.agreementPublicKey));
    return this.send(Subjects.keys.agreementKeysRegister, { agreementKey: toBase64Url(identity.agreementPublicKey), signature: toBase64Url(signature) });
  }

  /** A room's current members with their (unverified) agreement-key bindings. */
  agreementKeys(roomId: string): Promise<KeysAgreementKeysReply> {
    return this.send(Subjects.keys.agreementKeysList, { roomId });
  }

  /** Stores a signed share set as epoch `req.epoch`; 409 if another rekey won or the membership changed. */
  publishEpoch(req: KeysPublishEpochRequest): Promise<KeysPublishEpochReply> {
    return this.send(Subjects.keys.epochsPublish, req, { timeoutMs: PUBLISH_TIMEOUT_MS });
  }

  /** The caller's own sealed share of `epoch` (default: newest), with its Merkle proof. Unverified. */
  getShare(roomId: string, epoch?: number): Promise<KeysGetShareReply> {
    return this.send(Subjects.keys.sharesGet, epoch === undefined ? { roomId } : { roomId, epoch });
  }

  /**
   * A room's epochs and a summary of the newest, every page of them: the
   * reply looks like one page holding all epochs (no `next_cursor`), so
   * `epochs.at(-1)` is the newest however many there are. `current` is
   * taken from the last page read, so an epoch published mid-listing is
   * both in `epochs` and summarised. `pageLimit`: epochs per request
   * (default: the service's, 10,000).
   */
  async epochs(roomId: string, opts: { pageLimit?: number } = {}): Promise<KeysEpochsReply> {
    const limit = opts.pageLimit === undefined ? {} : { limit: opts.pageLimit };
    let page = await this.epochsPage(roomId, limit);
    const epochs = [...page.epochs];
    while (page.next_cursor !== undefined) {
      page = await this.epochsPage(roomId, { cursor: page.next_cursor, ...limit });
      // Each page continues above the last: one that goes back, or an empty
      // one that promises more, would let a misbehaving service loop us forever.
      const first = page.epochs[0];
      if (first === undefined ? page.next_cursor !== undefined : first <= (epochs.at(-1) ?? 0)) {
        throw new UnibusError(ErrorCode.Internal, ErrorReason.MalformedReply, "keys.epochs pages do not ascend");
      }
      epochs.push(...page.epochs);
    }
    return { roomId: page.roomId, epochs, ...(page.current === undefined ? {} : { current: page.current }) };
  }

  /** One page of a room's epochs (ascending); follow `next_cursor` for the rest, or use {@link epochs}. */
  epochsPage(roomId: string, opts: { cursor?: string; limit?: number } = {}): Promise<KeysEpochsReply> {
    return this.send(Subjects.keys.epochsList, { roomId, ...(opts.cursor === undefined ? {} : { cursor: opts.cursor }), ...(opts.limit === undefined ? {} : { limit: opts.limit }) });
  }
}
