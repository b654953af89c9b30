import { chmod, mkdtemp, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IdentityFileError, randomBytes, toHex } from "@unibus/crypto";
import { initNodeHome, loadNodeIdentity, NodeHomeError, readNodeClusterInfo, readNodeUnlockKey, readWrappedCuk, writeNodeClusterInfo, writeWrappedCuk } from "./replica-node-home.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "unibus-node-home-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("node home", () => {
  it("init writes the join key and the node unlock key 0600, and never overwrites them", async () => {
    const home = join(dir, "a");
    const identity = await initNodeHome(home);
    expect((await loadNodeIdentity(home)).principal).toBe(identity.principal);
    for (const f of ["node.key", "nuk"]) expect((await stat(join(home, f))).mode & 0o777).toBe(0o600);
    const nuk = await readNodeUnlockKey(home);
    expect(nuk.byteLength).toBe(32);
    await expect(initNodeHome(home)).rejects.toThrow();
    expect(toHex(await readNodeUnlockKey(home))).toBe(toHex(nuk));
  });

  it("a secret file others can read, a symlink, or a wrong size is refused", async () => {
    const home = join(dir, "b");
    await initNodeHome(home);
    const wrapped = randomBytes(72);
    await writeWrappedCuk(home, wrapped);
    expect(toHex(await readWrappedCuk(home))).toBe(toHex(wrapped));
    await chmod(join(home, "cuk.wrapped"), 0o640);
    await expect(readWrappedCuk(home)).rejects.toBeInstanceOf(NodeHomeError);
    await chmod(join(home, "node.key"), 0o644);
    await expect(loadNodeIdentity(home)).rejects.toBeInstanceOf(IdentityFileError);
    const other = join(dir, "c");
    await initNodeHome(other);
    await rm(join(other, "nuk"));
    await symlink(join(home, "nuk"), join(other, "nuk"));
    await expect(readNodeUnlockKey(other)).rejects.toBeInstanceOf(NodeHomeError);
    await rm(join(other, "nuk"));
    await writeFile(join(other, "nuk"), randomBytes(16), { mode: 0o600 });
    await expect(readNodeUnlockKey(other)).rejects.toThrow(/32 bytes/);
  });

  it("cluster info round-trips; a missing one says to register first", async () => {
    const home = join(dir, "d");
    await initNodeHome(home);
    await expect(readNodeClusterInfo(home)).rejects.toThrow(/register first/);
    const info = { nodeId: "node-4", clusterName: "prod", clusterId: "00".repeat(16), historyKey: "11".repeat(32), agreementKey: "22".repeat(32) };
    await writeNodeClusterInfo(home, info);
    expect(await readNodeClusterInfo(home)).toEqual(info);
  });
});
