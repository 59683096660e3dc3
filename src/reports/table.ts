// The report as text: one section per question an ops engineer asks after a campaign.
import type { Measures } from "./measures";

const ms = (v: number | null) =>
  v === null ? "-" : v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`;

export function formatTable(m: Measures): string {
  const out: string[] = [];
  const section = (title: string, rows: [string, string | number][]) => {
    out.push(title);
    const width = Math.max(0, ...rows.map(([k]) => k.length));
    for (const [k, v] of rows) out.push(`  ${k.padEnd(width)}  ${v}`);
    if (rows.length === 0) out.push("  (none)");
    out.push("");
  };
  out.push(`sendonce report since ${m.since}${m.journeyId ? `, journey ${m.journeyId}` : ""}`, "");
  section("duplicate sends (must be 0)", [
    ["keys sent more than once", m.duplicateSends.length],
    ...m.duplicateSends.map((d): [string, number] => [`  ${d.key}`, d.sends]),
  ]);
  // A journey's events are those it enters on; API replays are of requests, before any journey.
  section(
    `events by source${m.eventTypes ? ` (${m.eventTypes.join(", ")})` : ""}`,
    m.events.map((e) => [
      e.source,
      `${e.received} received, ${e.duplicates} duplicates dropped, ${e.conflicts} conflicts`,
    ]),
  );
  section(`idempotent replays${m.journeyId ? " (all journeys)" : ""}`, [
    ["API responses replayed", m.idempotentReplays],
  ]);
  section(
    "actions by journey, step, channel and source",
    m.actions.map((a) => [
      `${a.journeyId}.${a.stepId} (${a.channel}, ${a.source})`,
      `${a.state}${a.reason ? ` ${a.reason}` : ""}: ${a.count}`,
    ]),
  );
  section(
    "duplicate actions suppressed",
    m.suppressedDuplicates.map((s) => [`${s.journeyId}.${s.stepId}`, s.count]),
  );
  section("skips by reason", Object.entries(m.skipsByReason).sort());
  section("delays by reason", Object.entries(m.delaysByReason).sort());
  section("retries", [
    ["actions retried", m.retries.retried],
    ["of which sent", m.retries.succeeded],
    [
      "retry success rate",
      m.retries.successRate === null ? "-" : `${(m.retries.successRate * 100).toFixed(1)} %`,
    ],
  ]);
  section("in doubt", [["actions in_doubt", m.inDoubt]]);
  section("reconciliation mismatches", Object.entries(m.reconciliationMismatches).sort());
  section("event-to-send latency", [
    [
      "all",
      `p50 ${ms(m.latency.p50)}, p95 ${ms(m.latency.p95)}, p99 ${ms(m.latency.p99)} (${m.latency.count} sends)`,
    ],
    ...[
      ...Object.entries(m.latency.byChannel),
      ...Object.entries(m.latency.byJourney).map(([k, v]): [string, typeof v] => [
        `journey ${k}`,
        v,
      ]),
      ...Object.entries(m.latency.byStep).map(([k, v]): [string, typeof v] => [`step ${k}`, v]),
      ...Object.entries(m.latency.bySource).map(([k, v]): [string, typeof v] => [`source ${k}`, v]),
    ].map(([c, l]): [string, string] => [
      c,
      `p50 ${ms(l.p50)}, p95 ${ms(l.p95)}, p99 ${ms(l.p99)} (${l.count} sends)`,
    ]),
  ]);
  return out.join("\n");
}
