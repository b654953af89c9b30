// runServiceProcess: several services in one process, each on its own
// connection, failing and stopping as a unit.
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnWatched, startTestServer } from "@unibus/testing";
import type { TestServer, WatchedProcess } from "@unibus/testing";

const FIXTURE = fileURLToPath(new URL("./two-services.fixture.ts", import.meta.url));

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ jetstream: false });
});
afterAll(async () => {
  await server?.stop();
});

function run(extra: NodeJS.ProcessEnv = {}): WatchedProcess {
  return spawnWatched(process.execPath, ["--import", "tsx", FIXTURE], {
    env: { PATH: process.env["PATH"], UNIBUS_URL: server.url, ...extra },
    label: "two-services fixture",
  });
}

interface Connz {
  connections: { name?: string }[];
}

describe("runServiceProcess", () => {
  it("starts every member on its own connection, and SIGTERM drains them all and exits 0", { timeout: 60_000 }, async () => {
    const proc = run();
    try {
      await proc.waitFor("stdout", /"svc":"first".*service started/, 45_000);
      await proc.waitFor("stdout", /"svc":"second".*service started/, 45_000);
      const nc = await server.connect();
      try {
        for (const name of ["first", "second"]) {
          expect((await nc.request(`fixture.${name}.status`, "{}", { timeout: 5_000 })).json()).toMatchObject({ service: name });
        }
      } finally {
        await nc.close();
      }
      // One connection per service, named after it: separate clients on the bus.
      const connz = (await (await fetch(`http://127.0.0.1:${server.monitorPort}/connz`)).json()) as Connz;
      expect(connz.connections.map((c) => c.name).filter((n) => n === "first" || n === "second").sort()).toEqual(["first", "second"]);
      proc.child.kill("SIGTERM");
      expect(await proc.exitCode(20_000)).toBe(0);
      expect(proc.stdout()).toMatch(/"svc":"first".*draining/);
      expect(proc.stdout()).toMatch(/"svc":"second".*draining/);
    } finally {
      if (proc.child.exitCode === null) proc.child.kill("SIGKILL");
    }
  });

  it("a member that cannot start ends the whole process with exit 1 and one fatal line naming it", { timeout: 60_000 }, async () => {
    const proc = run({ FIXTURE_FAIL: "second" });
    expect(await proc.exitCode(45_000)).toBe(1);
    const fatal = proc.stdout().split("\n").filter((l) => l.includes('"level":60'));
    expect(fatal).toEqual([expect.stringMatching(/"svc":"second".*UNIBUS_JS_REPLICAS.*second failed to start/)]);
  });
});
