// Public surface of @unibus/crypto: every export is named here.
export { aeadDecrypt, aeadEncrypt, aeadEncryptInto, AeadSize } from "./aead.js";
export { nkeyAuthenticator } from "./authenticator.js";
export { LARGE_SIGNATURE_BYTES, SigningKey, signingBackend, verifyMany, verifySignature, verifySignatureUncached } from "./ed25519.js";
export type { SignatureCheck, VerifyManyOptions } from "./ed25519.js";
export {
  constantTimeEqual,
  fromBase64Url,
  fromHex,
  randomBytes,
  randomNonce,
  toBase64Url,
  toHex,
} from "./encoding.js";
export { envelopeCheck, envelopeFromHeaders, EnvelopeHeader, envelopeSigningBytes, envelopeSigningBytesForBodyHash, envelopeToHeaders, signEnvelope, verifyEnvelope, verifyEnvelopeForBodyHash } from "./envelope.js";
export type { Envelope } from "./envelope.js";
export { DecryptError, EncodingError, InvalidKeyError, InvalidPrincipalError } from "./errors.js";
export { blake3, blake3DeriveKey, blake3Mac, sha256 } from "./hash.js";
export { Blake3Key } from "./blake3-key.js";
export {
  createIdentity,
  IDENTITY_FILE_VERSION,
  IdentityFileError,
  IdentityFileErrorCode,
  loadIdentityFile,
  publicIdentity,
  writeIdentityFile,
} from "./identity.js";
export type { Identity, PublicIdentity } from "./identity.js";
export { NODE_STORE_KEY_CONTEXT, nodeStoreKey, UNLOCK_KEY_BYTES } from "./node-store-key.js";
export { curvePublicKey, newCurveSeed } from "./curve-nkey.js";
export { decodeNkeyPublic, decodeNkeySeed, encodeNkeyPublic, encodeNkeySeed, NkeyPrefix } from "./nkey.js";
export { isPrincipal, normalisePrincipal, principalFromPublicKey, publicKeyFromPrincipal } from "./principal.js";
export {
  acceptorMac,
  acceptorNonce,
  acceptorNonceExpiry,
  acceptorNonceLive,
  CLUSTER_ID_BYTES,
  clusterIdFromName,
  dialerMac,
  macMatches,
  MIN_PSK_BYTES,
  parseReplicaPsk,
  prepareReplicaMacKey,
  REPLICA_CLOCK_SKEW_MS,
  REPLICA_HANDSHAKE_TTL_MS,
  REPLICA_HANDSHAKE_VERSION,
  REPLICA_ID_PATTERN,
  REPLICA_NONCE_BYTES,
  ReplicaDirection,
  ReplicaHandshakeContext,
  ReplicaHandshakeError,
  ReplicaHandshakeLabel,
  ReplicaHandshakeStatus,
  replicaKeyId,
  replicaMac,
  replicaMacInput,
  replicaMacKey,
  replicaProofs,
  replicaSessionId,
  replicaTranscript,
  signReplicaTranscript,
  verifyReplicaTranscript,
} from "./replica-handshake.js";
export type { HandshakeBinding, ReplicaProofs } from "./replica-handshake.js";
export {
  decodeReplicaChallenge,
  decodeReplicaFinish,
  decodeReplicaFinishReply,
  decodeReplicaHello,
  encodeReplicaChallenge,
  encodeReplicaFinish,
  encodeReplicaFinishReply,
  encodeReplicaHello,
  encodeReplicaStatus,
  REPLICA_FINISH_MAX_BYTES,
  REPLICA_HELLO_MAX_BYTES,
  ReplicaWire,
} from "./replica-wire.js";
export type { ReplicaChallengeMessage, ReplicaFinishMessage, ReplicaFinishReplyMessage, ReplicaHelloMessage } from "./replica-wire.js";
export { CONNECT_NONCE_PATTERN, ConnectNonceError, isMarkedStatement, markStatement, STATEMENT_MARKER } from "./statement-marker.js";
export { openSealed, SealedBox, sealTo, sealToMany, sealToVerified } from "./sealed-box.js";
export type { BoundRecipient, SealToVerifiedOptions, VerifiedSeal } from "./sealed-box.js";
export { helpCryptoPoolUntil, warmCryptoPool } from "./crypto-pool.js";
export { agreementPublicKey, generateAgreementKeyPair, x25519SharedSecret } from "./x25519.js";
export type { AgreementKeyPair } from "./x25519.js";
export {
  ClusterSecretError,
  ClusterSeedFormat,
  decodeRecoverySecret,
  deriveClusterKeys,
  encodeRecoverySecret,
  gatewayAgreementBytes,
  generateClusterSeed,
  latestPointerBytes,
  nodeAgreementBytes,
  seedAnswerBytes,
  seedRequestHash,
  unlockWrappedCuk,
  unwrapCuk,
  verifyDetached,
  wrapCuk,
} from "./replica-cluster.js";
export type { ClusterKeys } from "./replica-cluster.js";
