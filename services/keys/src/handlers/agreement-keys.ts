import type { KV } from "@nats-io/kv";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import { fromBase64Url, verifySignature } from "@unibus/crypto";
import { handles } from "@unibus/kit";
import { agreementKeyStatementBytes } from "@unibus/sdk";
import { activeUser, currentMembers, requireMember } from "../access.js";
import type { MembershipView } from "../access.js";
import { readAgreementKeyRecord, unavailable } from "../store/records.js";
import type { AgreementKeyRecord } from "../store/records.js";
import type { AgreementKeyDirectory } from "../store/agreement-directory.js";

/** What the agreement-key endpoints work on. */
export interface AgreementKeyDeps {
  agreementKeys: KV;
  /** The bucket in memory; without it every listing reads the bucket. */
  agreementDirectory?: AgreementKeyDirectory;
  membership: MembershipView;
}

/** `agreement_keys.register` and `agreement_keys.list`. */
export function agreementKeyHandlers(deps: AgreementKeyDeps) {
  return {
    register: handles("keys", "agreement_keys.register", {
      async handler(req, caller, ctx) {
        const user = activeUser(caller);
        const agreementKey = fromBase64Url(req.agreementKey);
        // Stored only if the principal itself signed the binding: clients
        // verify it again, so a key the server (or anyone) substituted is
        // useless; checking here keeps garbage out of the bucket.
        if (agreementKey.byteLength !== 32 || !verifySignature(user.publicKey, agreementKeyStatementBytes(user.principal, agreementKey), fromBase64Url(req.signature))) {
          throw new UnibusError(ErrorCode.BadRequest, "invalid_agreement_key_signature", "the agreement key binding is not signed by the caller");
        }
        const record: AgreementKeyRecord = { principal: user.principal, agreementKey: req.agreementKey, signature: req.signature };
        let revision: number;
        try {
          revision = await deps.agreementKeys.put(user.principal, JSON.stringify(record));
        } catch (err) {
          throw unavailable(err);
        }
        deps.agreementDirectory?.remember(record);
        ctx.logger.info({ revision }, "agreement key registered");
        return { principal: user.principal, agreementKey: req.agreementKey, revision };
      },
    }),
    list: handles("keys", "agreement_keys.list", {
      async handler(req, caller) {
        const user = activeUser(caller);
        if (user.role !== "admin") await requireMember(deps.membership, req.roomId, user.principal);
        // The directory's catch-up check runs alongside the member listing.
        const [principals, read] = await Promise.all([
          currentMembers(deps.membership, req.roomId),
          deps.agreementDirectory?.reader() ?? (async (principals: readonly string[]) => Promise.all(principals.map((p) => readAgreementKeyRecord(deps.agreementKeys, p)))),
        ]);
        // From memory when watched; else parallel gets, pipelined on one connection.
        const records = await read(principals);
        return {
          roomId: req.roomId,
          members: principals.map((principal, i) => {
            const r = records[i];
            return r == null ? { principal } : { principal, agreementKey: r.agreementKey, signature: r.signature };
          }),
        };
      },
    }),
  };
}
