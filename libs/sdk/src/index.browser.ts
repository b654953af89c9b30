// The browser surface of @unibus/sdk (package condition "unibus-browser"):
// the same request signing and membership helpers as the Node client, for a
// caller that brings its own nats.js connection (the admin panel's WebSocket).
export { envelopeHeaders, signedRequest } from "./signed-request.js";
export { AdminApi, RoomsApi, UsersApi } from "./membership.js";
export type { PageOptions, RoomRole, SendRequest, UserRole } from "./membership.js";
export { UnibusError, ErrorCode, ErrorReason } from "@unibus/contracts";
