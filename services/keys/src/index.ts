/**
 * @unibus/keys: room-key epochs stored as signed sets of sealed shares, and
 * members' self-signed agreement keys (architecture §5, contracts/specs/room-keys.md).
 */
export { createKeysService, keysService } from "./service.js";
export type { KeysDeps, RunningKeysService } from "./service.js";
export { KeysBucket, MembershipReadBucket, epochKey } from "./store/records.js";
export type { AgreementKeyRecord, EpochRecord, ShareEntry } from "./store/records.js";
export { EpochPage, PUBLISH_EPOCH_MAX_BYTES } from "./handlers/epochs.js";
