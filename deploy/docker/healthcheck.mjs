// Healthcheck of a service container (exec form, plain node: no tsx, no
// shell in a FROM-scratch image). Healthy = this container holds an
// ESTABLISHED TCP connection to the bus client port, read from the
// container's own /proc/net/tcp{,6}. It is per container, so one healthy
// replica cannot vouch for a broken one; a micro PING would need an identity
// allowed to publish `$SRV.PING.*`, which service users are not (architecture §4).
import { readFileSync } from "node:fs";

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
