#!/usr/bin/env node
// The CLI is TypeScript run through tsx's loader, so `npx unibus` works right
// after `npm install` with no build step.
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
