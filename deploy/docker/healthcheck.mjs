// Healthcheck of a service container (exec form, plain node: no tsx, no
// shell in a FROM-scratch image). Healthy = this container holds an
// ESTABLISHED TCP connection to the bus client port, read from the
// container's own /proc/net/tcp{,6}. It is per container, so one healthy
// replica cannot vouch for a broken one; a micro PING would need an identity
// allowed to publish `$SRV.PING.*`, which service users are not (architecture §4).
//
// A container that serves HTTP health itself (healthz) sets UNIBUS_HEALTH_URL
// instead, and is healthy when that URL answers 200 within 2 s: its /livez
// says only that the process runs, so a slow bus never gets it restarted.
import { readFileSync } from "node:fs";

const healthUrl = process.env.UNIBUS_HEALTH_URL;
if (healthUrl) {
  try {
    const res = await fetch(healthUrl, { signal: AbortSignal.timeout(2000) });
    if (res.status !== 200) {
      process.stderr.write(`${healthUrl} answered ${res.status}\n`);
      process.exit(1);
    }
    process.exit(0);
  } catch (err) {
    process.stderr.write(`${healthUrl}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}

const port = Number(process.env.UNIBUS_HEALTH_PORT ?? 4222);
const portHex = port.toString(16).toUpperCase().padStart(4, "0");
const ESTABLISHED = "01";

function established(file) {
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return 0;
  }
  return text
    .split("\n")
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length > 3 && f[2]?.endsWith(`:${portHex}`) && f[3] === ESTABLISHED).length;
}

const n = established("/proc/net/tcp") + established("/proc/net/tcp6");
if (n === 0) {
  process.stderr.write(`no established connection to the bus port ${port}\n`);
  process.exit(1);
}
