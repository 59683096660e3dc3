#!/usr/bin/env node
// The sendonce CLI. Sources are TypeScript run through tsx's loader, so a checkout runs
// with no build step.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
