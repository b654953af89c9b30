/**
 * @unibus/sdk: connect to the bus as an identity, send signed control-plane
 * requests, and manage users and rooms through typed helpers.
 */
export { connect } from "./client.js";
export type { ConnectOptions, RequestOptions, UnibusClient } from "./client.js";
export { AdminApi, RoomsApi, UsersApi } from "./membership.js";
export type { RoomRole, SendRequest, UserRole } from "./membership.js";
export { UnibusError, ErrorCode, ErrorReason } from "@unibus/contracts";
