import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { randomBytes, toHex } from "@unibus/crypto";
import { GatewayConfigError, loadGatewayConfig } from "./config.js";

const dir = mkdtempSync(join(tmpdir(), "gw-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function keyFile(name: string, text: string, mode: number): string {
  const path = join(dir, name);
  writeFileSync(path, text, { mode });
  chmodSync(path, mode);
  return path;
}

function configError(env: NodeJS.ProcessEnv): GatewayConfigError {
  try {
    loadGatewayConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayConfigError);
    return err as GatewayConfigError;
  }
  throw new Error("expected a GatewayConfigError");
}

describe("loadGatewayConfig", () => {
  const current = randomBytes(32);
  const previous = randomBytes(32);

  it("no PSK at all is a valid config (the handshake then answers AuthRequired)", () => {
    expect(loadGatewayConfig({})).toEqual({});
  });

  it("reads the PSK from env and the previous one from a 0600 file, with cluster and acceptor ids", () => {
    const file = keyFile("prev.key", `${Buffer.from(previous).toString("base64")}\n`, 0o600);
    const cfg = loadGatewayConfig({ UNIBUS_REPLICA_PSK: toHex(current), UNIBUS_REPLICA_PSK_PREVIOUS_FILE: file, UNIBUS_CLUSTER_NAME: "prod", UNIBUS_REPLICA_ID: "gw-2" });
    expect(cfg).toEqual({ psk: { current, previous }, clusterName: "prod", acceptorId: "gw-2" });
  });

  it("refuses a PSK file readable by group or others, naming the mode but never the key", () => {
    const secret = toHex(current);
    const file = keyFile("loose.key", secret, 0o640);
    const err = configError({ UNIBUS_REPLICA_PSK_FILE: file });
    expect(err.message).toMatch(/0600 \(has 640\)/);
    expect(err.message).not.toContain(secret);
  });

  it("refuses a symlink, a missing file, both sources at once, and a previous PSK alone", () => {
    const target = keyFile("target.key", toHex(current), 0o600);
    const link = join(dir, "link.key");
    symlinkSync(target, link);
    expect(configError({ UNIBUS_REPLICA_PSK_FILE: link }).message).toMatch(/regular file/);
    expect(configError({ UNIBUS_REPLICA_PSK_FILE: join(dir, "nope") }).message).toMatch(/cannot read/);
    expect(configError({ UNIBUS_REPLICA_PSK: toHex(current), UNIBUS_REPLICA_PSK_FILE: target }).message).toMatch(/not both/);
    expect(configError({ UNIBUS_REPLICA_PSK_PREVIOUS: toHex(previous) }).message).toMatch(/needs a current PSK/);
  });

  it("refuses a short or undecodable PSK without quoting it, and a bad acceptor id", () => {
    const short = toHex(randomBytes(31));
    const err = configError({ UNIBUS_REPLICA_PSK: short });
    expect(err.message).toMatch(/at least 32 bytes/);
    expect(err.message).not.toContain(short);
    expect(configError({ UNIBUS_REPLICA_PSK: "this is not a key %%" }).message).not.toContain("not a key");
    expect(configError({ UNIBUS_REPLICA_PSK: toHex(current), UNIBUS_REPLICA_ID: "Bad Id" }).message).toMatch(/UNIBUS_REPLICA_ID/);
  });
});
