// `sendonce report`: the measures as a table, JSON or a self-contained HTML file.
import { writeFileSync } from "node:fs";
import { loadConfig } from "../config";
import { requireDeployed } from "../journeys/deployed";
import { openLedger } from "../infra/services";
import { formatHtml } from "../reports/html";
import { collectMeasures } from "../reports/measures";
import { formatTable } from "../reports/table";
import { parseWhen } from "./backfill";

export async function runReport(opts: {
  since: string;
  journey?: string;
  format: "table" | "json" | "html";
  out?: string;
}): Promise<number> {
  const since = new Date(parseWhen("since", opts.since));
  const config = loadConfig();
  const { db, close } = await openLedger(config, 4);
  try {
    if (opts.journey) await requireDeployed(db, opts.journey);
    const m = await collectMeasures(db, {
      since,
      ...(opts.journey && { journeyId: opts.journey }),
    });
    const text =
      opts.format === "json"
        ? JSON.stringify(m, null, 2)
        : opts.format === "html"
          ? formatHtml(m)
          : formatTable(m);
    if (opts.out) {
      writeFileSync(opts.out, text);
      console.log(`wrote ${opts.out}`);
    } else {
      console.log(text);
    }
    // A duplicate send is the one thing that must never happen: make it fail scripts.
    return m.duplicateSends.length > 0 ? 2 : 0;
  } finally {
    await close();
  }
}
