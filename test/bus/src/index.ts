/**
 * @unibus/testbus: a whole callout-protected bus for integration tests, built
 * from the SAME server-permission code `unibus up` uses
 * (`calloutAuthorization` in @unibus/cli), so a test that passes here proves
 * the production ACLs, not a hand-written copy of them.
 */
export { startTestBus } from "./bus.js";
export type { TestBus, TestBusMember, TestBusOptions } from "./bus.js";
