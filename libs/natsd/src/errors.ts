import { MIN_NATS_SERVER_VERSION } from "./version.js";

/**
 * No usable nats-server (>= {@link MIN_NATS_SERVER_VERSION}) could be found or provisioned.
 *
 * The message says what to do and what every provisioning step found, so a
 * developer on a fresh machine can fix it without reading the code.
 */
export class NatsServerNotFoundError extends Error {
  override readonly name = "NatsServerNotFoundError";
  /** One line per provisioning step, e.g. `PATH: nats-server 2.9.10 is too old`. */
  readonly findings: readonly string[];

  constructor(findings: readonly string[], options?: { cause?: unknown }) {
    super(
      [
        `no usable nats-server (>= ${MIN_NATS_SERVER_VERSION}) was found.`,
        `Fix: install nats-server >= ${MIN_NATS_SERVER_VERSION} on PATH, or set NATS_SERVER_BIN=/path/to/nats-server.`,
        "What each step found:",
        ...findings.map((f) => `  - ${f}`),
      ].join("\n"),
      options,
    );
    this.findings = findings;
  }
}

/** nats-server exited or did not become ready while starting. */
export class NatsServerStartError extends Error {
  override readonly name = "NatsServerStartError";
  /** Last lines of the server's stderr and log file, for diagnosis. */
  readonly logTail: string;

  constructor(message: string, logTail: string, options?: { cause?: unknown }) {
    super(logTail ? `${message}\n--- nats-server log tail ---\n${logTail}` : message, options);
    this.logTail = logTail;
  }
}

/** A config object cannot be rendered to nats-server syntax. */
export class NatsConfigError extends Error {
  override readonly name = "NatsConfigError";

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
