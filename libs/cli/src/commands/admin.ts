import { resolve } from "node:path";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import type { MembershipAdminBootstrapReply } from "@unibus/contracts";
import type { Identity } from "@unibus/crypto";
import { retry } from "@unibus/kit";
import { stringFlag } from "../args.js";
import { printJson } from "../client-command.js";
import { commandGroup, parsedCommand } from "../command.js";
import type { Command } from "../command.js";
import { connectClientAs, requestError, resolveConnectionSettings } from "../connection.js";
import type { ConnectionSettings } from "../connection.js";
import { ExitCode } from "../errors.js";
import { resolveHome } from "../home.js";
import { loadIdentityForCli } from "../identity-file.js";

/** Handle of admin #0 unless `--handle` says otherwise. */
export const DEFAULT_ADMIN_HANDLE = "admin";

/** Inputs of {@link bootstrapAdmin}. */
export interface BootstrapAdminOptions {
  /** Where the bus is. */
  readonly settings: ConnectionSettings;
  /** The privileged internal identity (a config-level user allowed only `admin.bootstrap`). */
  readonly bootstrapIdentity: Identity;
  /** Principal to seed as admin #0. */
  readonly adminPrincipal: string;
  readonly handle: string;
  /**
   * Keep retrying while membership is not answering yet (no responders,
   * timeout, 503), up to this long. 0 = one attempt.
   */
  readonly waitMs?: number;
}

/**
 * Seeds admin #0 through `admin.bootstrap` as the bootstrap identity.
 * Idempotent: when an active admin exists the service returns it with
 * `created: false` and changes nothing.
 */
export async function bootstrapAdmin(opts: BootstrapAdminOptions): Promise<MembershipAdminBootstrapReply> {
  const client = await connectClientAs(opts.settings, opts.bootstrapIdentity, "unibus-cli admin bootstrap");
  try {
    return await retry(() => client.admin.bootstrap(opts.adminPrincipal, opts.handle), { budgetMs: opts.waitMs ?? 0, delayMs: 250, retryable: notReadyYet }).catch((err: unknown) => {
      throw requestError(err, "membership");
    });
  } finally {
    await client.close().catch(() => undefined);
  }
}

/**
 * Resolves once `identity` logs in, retrying for `waitMs`: for `unibus up`,
 * whose bootstrap identity is a static server user and so proves nothing of
 * the auth callout, which may still be starting when admin #0 is seeded. A
 * refusal in that window is the callout not answering yet, so every failure
 * is retried; the last one is thrown once the time is spent.
 */
export async function waitForLogin(settings: ConnectionSettings, identity: Identity, waitMs: number): Promise<void> {
  await retry(
    async () => {
      const client = await connectClientAs(settings, identity, "unibus-cli login check");
      await client.close().catch(() => undefined);
    },
    { budgetMs: waitMs, delayMs: 100 },
  );
}

function notReadyYet(err: unknown): boolean {
  if (err instanceof UnibusError) return err.code === ErrorCode.Unavailable;
  const e = err as Error;
  return e.name === "NoRespondersError" || e.name === "TimeoutError" || /no responders|timeout/i.test(e.message);
}

const bootstrapHelp = `Usage: unibus admin bootstrap [--identity PATH] [--bootstrap-identity PATH] [--handle H] [--json]

Seeds admin #0 through the privileged internal bootstrap identity (architecture §3).
Idempotent: once an active admin exists it is reported and nothing changes.
\`unibus up\` runs this on every start.

Options:
  -i, --identity PATH        identity of the admin to seed (default: <state dir>/admin.id)
  --bootstrap-identity PATH  the bootstrap identity (default: <state dir>/identities/bootstrap.id)
  --handle H                 the admin's handle (default ${DEFAULT_ADMIN_HANDLE})
  -s, --server URL           bus URL (default: $UNIBUS_URL, else <state dir>/env)
  --json                     print JSON
  -h, --help                 show this help`;

const adminBootstrap = parsedCommand({
  name: "bootstrap",
  command: "admin bootstrap",
  summary: "seed admin #0 (idempotent)",
  help: bootstrapHelp,
  options: {
    server: { type: "string", short: "s" },
    identity: { type: "string", short: "i" },
    "bootstrap-identity": { type: "string" },
    handle: { type: "string" },
    json: { type: "boolean" },
  },
  maxPositionals: 0,
  async run({ flags }, io) {
    const home = resolveHome(io.env, io.cwd);
    // --identity names the admin to seed, not who connects: only the server is taken from the settings.
    const settings = await resolveConnectionSettings({ server: stringFlag(flags, "server") }, io);
    const admin = await loadIdentityForCli(resolve(io.cwd, stringFlag(flags, "identity") ?? home.adminIdentityFile));
    const bootstrapIdentity = await loadIdentityForCli(resolve(io.cwd, stringFlag(flags, "bootstrap-identity") ?? home.bootstrapIdentityFile));
    const reply = await bootstrapAdmin({
      settings,
      bootstrapIdentity,
      adminPrincipal: admin.principal,
      handle: stringFlag(flags, "handle") ?? DEFAULT_ADMIN_HANDLE,
    });
    if (flags.json === true) return printJson(io, reply);
    if (reply.created) io.out(`bootstrapped admin #0 ${reply.user.principal} (${reply.user.handle})`);
    else io.out(`an admin already exists: ${reply.user.principal} (${reply.user.handle}); nothing changed`);
    if (!reply.created && reply.user.principal !== admin.principal) {
      io.err(`note: ${admin.principal} was not made admin; ask the existing admin to run \`unibus users add\``);
    }
    return ExitCode.ok;
  },
});

/** `unibus admin bootstrap`. */
export const adminCommandGroup: Command = commandGroup({
  name: "admin",
  summary: "privileged set-up of the bus (admin #0)",
  intro: "Usage: unibus admin <command>\n\nPrivileged operations done with the internal bootstrap identity.",
  subcommands: [adminBootstrap],
});

