import { ErrorCode, UnibusError } from "@unibus/contracts";
import { toBase64Url } from "@unibus/crypto";
import { handles } from "@unibus/kit";
import { merkleProof, principalsHash } from "@unibus/sdk";
import { activeUser, requireMember } from "../access.js";
import { epochKey, readEpochRecord } from "../store/records.js";
import { leavesOf, listEpochs } from "./epochs.js";
import type { EpochDeps } from "./epochs.js";

/** `shares.get`: the caller's own sealed share of an epoch, with its Merkle proof. */
export function shareHandlers(deps: EpochDeps) {
  const { roomKeys, membership } = deps;
  return {
    get: handles("keys", "shares.get", {
      async handler(req, caller) {
        const user = activeUser(caller);
        // A former member gets nothing, not even which epochs exist.
        await requireMember(membership, req.roomId, user.principal);
        const epoch = req.epoch ?? (await listEpochs(roomKeys, req.roomId)).at(-1);
        const record = epoch === undefined ? null : await readEpochRecord(roomKeys, epochKey(req.roomId, epoch));
        if (record === null) throw new UnibusError(ErrorCode.NotFound, "epoch_not_found", "no such epoch");
        // An epoch stored before statements named a log position cannot be verified by any member.
        if (record.logSeq === undefined || record.logHead === undefined) throw new UnibusError(ErrorCode.NotFound, "epoch_unverifiable", "the epoch names no membership-log position; rekey");
        const index = record.shares.findIndex((s) => s.principal === user.principal);
        const share = record.shares[index];
        if (share?.sealedShare === undefined) throw new UnibusError(ErrorCode.NotFound, "no_share", "no share of this epoch for the caller");
        return {
          roomId: record.roomId,
          epoch: record.epoch,
          distributor: record.distributor,
          signature: record.signature,
          leafCount: record.shares.length,
          index,
          sealedShare: share.sealedShare,
          proof: merkleProof(leavesOf(record.shares), index).map(toBase64Url),
          createdAt: record.createdAt,
          logSeq: record.logSeq,
          logHead: record.logHead,
          recipientsHash: toBase64Url(principalsHash(record.shares.map((s) => s.principal))),
        };
      },
    }),
  };
}
