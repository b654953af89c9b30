// The browser surface of @unibus/contracts (package condition
// "unibus-browser"): subjects and the error wire format, without the schema
// validator (ajv), which a browser client does not need: the services
// validate every request themselves.
export type * from "./generated/types.js";
export { EndpointAccess, EndpointCatalogue, endpointSubject, microEndpointName } from "./endpoints.js";
export { ReadOnlySubjects, ServiceName, SubjectPrefix, Subjects } from "./subjects.js";
export { ErrorCode, ErrorReason, ServiceErrorCodeHeader, ServiceErrorHeader, UnibusError, decodeReply, isErrorCode, replyError } from "./errors.js";
export type { ErrorDetails, ReplyMessage, UnibusErrorOptions } from "./errors.js";
