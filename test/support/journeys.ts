// Journeys written for one test into a directory of their own.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Writes `files` (name → YAML) into a fresh directory and returns its path. */
export function journeysDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "sendonce-journeys-"));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}
