// The browser surface of @unibus/crypto (package condition "unibus-browser"):
// what signs requests and logins, and nothing that needs node:fs or
// node:crypto. The modules are the Node ones; the bundler swaps in each
// `*.browser.ts` sibling (encoding, ed25519, hash) for its Node original.
export { nkeyAuthenticator } from "./authenticator.js";
export { SigningKey, verifySignature } from "./ed25519.js";
export { constantTimeEqual, fromBase64Url, fromHex, randomBytes, toBase64Url, toHex } from "./encoding.js";
export { envelopeFromHeaders, EnvelopeHeader, envelopeSigningBytes, envelopeToHeaders, signEnvelope, verifyEnvelope } from "./envelope.js";
export type { Envelope } from "./envelope.js";
export { EncodingError, InvalidKeyError, InvalidPrincipalError } from "./errors.js";
export { sha256 } from "./hash.js";
export { decodeNkeyPublic, decodeNkeySeed, encodeNkeyPublic, encodeNkeySeed, NkeyPrefix } from "./nkey.js";
export { isPrincipal, normalisePrincipal, principalFromPublicKey, publicKeyFromPrincipal } from "./principal.js";
