// `sendonce explain --customer ID`: reads DATABASE_URL, or the demo's embedded database.
import { loadConfig } from "../config";
import { requireDeployed } from "../journeys/deployed";
import { openLedger } from "../infra/services";
import { formatTimeline, loadTimeline } from "../ops/explain";

export async function runExplain(opts: {
  customer: string;
  journey?: string;
  format: "text" | "json";
}): Promise<number> {
  const config = loadConfig();
  const { db, close } = await openLedger(config, 2);
  try {
    if (opts.journey) await requireDeployed(db, opts.journey);
    const entries = await loadTimeline(db, opts.customer, opts.journey);
    if (opts.format === "json") {
      console.log(
        JSON.stringify(entries, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v), 2),
      );
      return 0;
    }
    if (entries.length === 0) {
      console.log(
        `nothing recorded for customer ${opts.customer}${opts.journey ? ` in journey ${opts.journey}` : ""}`,
      );
      return 1;
    }
    console.log(
      `customer ${opts.customer}${opts.journey ? `, journey ${opts.journey}` : ""}: ${entries.length} entries`,
    );
    for (const line of formatTimeline(entries)) console.log(`  ${line}`);
    return 0;
  } finally {
    await close();
  }
}
