// `sendonce reconcile`: lists every mismatch between the ledger and the providers.
import { createTwilioChannel } from "../channels/sms-twilio";
import { loadConfig, requireDatabaseUrl } from "../config";
import { openMigrated } from "../db/migrate";
import type { Mismatch, ReconcileOptions } from "../ops/reconcile";
import { reconcileEmail, reconcilePoints, reconcileSms, recordMismatches } from "../ops/reconcile";
import { parseWhen } from "./backfill";

/** Mismatch kinds that are reported but leave the exit code alone. */
const INFORMATIONAL = new Set(["sms_not_checked", "email_event_unknown_message"]);

export async function runReconcile(opts: {
  channel?: "email" | "sms" | "points";
  since: string;
  resolve: boolean;
}): Promise<number> {
  const config = loadConfig();
  const db = await openMigrated(requireDatabaseUrl(config), 4);
  try {
    const options: ReconcileOptions = {
      since: new Date(parseWhen("since", opts.since)),
      resolve: opts.resolve,
      now: new Date(),
      graceMs: config.inDoubtGraceMs,
      callWindowMs: config.leaseMs + config.sendTimeoutMs,
      claimLeaseMs: config.leaseMs,
      ...(config.twilio && {
        sms: createTwilioChannel({
          ...config.twilio,
          publicBaseUrl: config.publicBaseUrl,
          timeoutMs: config.sendTimeoutMs,
        }),
      }),
    };
    const channels = opts.channel ? [opts.channel] : (["email", "sms", "points"] as const);
    const found: Mismatch[] = [];
    for (const channel of channels) {
      const run = { email: reconcileEmail, sms: reconcileSms, points: reconcilePoints }[channel];
      const mismatches = await run(db, options);
      console.log(
        `${channel}: ${mismatches.length === 0 ? "no mismatches" : `${mismatches.length} mismatch${mismatches.length === 1 ? "" : "es"}`}`,
      );
      for (const m of mismatches) {
        const who = [
          m.customerId && `customer ${m.customerId}`,
          m.actionKey && `key ${m.actionKey}`,
        ]
          .filter(Boolean)
          .join(", ");
        console.log(
          `  ${m.kind}${who ? ` (${who})` : ""}: ${m.detail}${m.resolution ? ` → resolved: ${m.resolution}` : ""}`,
        );
      }
      found.push(...mismatches);
    }
    // All recorded (the report counts them); the informational ones do not fail the run:
    // nothing to compare SMS with, and delivery events for messages that are not ours
    // (another system's mail) are nothing the ledger can fix.
    await recordMismatches(db, found, options.now);
    return found.some((m) => !m.resolution && !INFORMATIONAL.has(m.kind)) ? 1 : 0;
  } finally {
    await db.$disconnect();
  }
}
