// GET /metrics: the report's measures in Prometheus' text format. Values are read from the
// ledger at scrape time (so every API replica reports the same truth), as gauges of totals.
// Labels are bounded: journeys and steps come from YAML, states and reasons are enums, and
// sources beyond the busiest MAX_SOURCES are folded into "other".
import { Gauge, Registry } from "prom-client";
import type { Db } from "../db/client";
import { collectMeasures } from "./measures";

const MAX_SOURCES = 20;

export function createMetrics(db: Db): Registry {
  const registry = new Registry();
  let pending: ReturnType<typeof collectMeasures> | undefined;
  // One read of the ledger per scrape, shared by every gauge.
  const measures = () => {
    pending ??= collectMeasures(db, { since: new Date(0) }).finally(() =>
      setTimeout(() => (pending = undefined), 0),
    );
    return pending;
  };
  const gauge = (
    name: string,
    help: string,
    labelNames: string[],
    fill: (g: Gauge, m: Awaited<ReturnType<typeof collectMeasures>>) => void,
  ) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      async collect() {
        this.reset();
        fill(this, await measures());
      },
    });
  gauge("sendonce_events_received", "Events stored, by source", ["source"], (g, m) => {
    for (const e of foldSources(m.events)) g.set({ source: e.source }, e.received);
  });
  gauge(
    "sendonce_events_duplicate",
    "Event redeliveries dropped as duplicates, by source",
    ["source"],
    (g, m) => {
      for (const e of foldSources(m.events)) g.set({ source: e.source }, e.duplicates);
    },
  );
  gauge(
    "sendonce_events_conflict",
    "Event ids reused with another payload, by source",
    ["source"],
    (g, m) => {
      for (const e of foldSources(m.events)) g.set({ source: e.source }, e.conflicts);
    },
  );
  gauge(
    "sendonce_idempotent_replays",
    "API responses replayed for a repeated Idempotency-Key",
    [],
    (g, m) => g.set(m.idempotentReplays),
  );
  gauge(
    "sendonce_actions",
    "Actions in the ledger by journey, step, channel and state",
    ["journey", "step", "channel", "state"],
    (g, m) => {
      for (const a of m.actions)
        g.inc(
          { journey: a.journeyId, step: a.stepId, channel: a.channel, state: a.state },
          a.count,
        );
    },
  );
  gauge("sendonce_skips", "Skipped actions by reason", ["reason"], (g, m) => {
    for (const [reason, n] of Object.entries(m.skipsByReason)) g.set({ reason }, n);
  });
  gauge(
    "sendonce_suppressed_duplicates",
    "Repeated intents suppressed by the ledger, by journey and step",
    ["journey", "step"],
    (g, m) => {
      for (const s of m.suppressedDuplicates)
        g.set({ journey: s.journeyId, step: s.stepId }, s.count);
    },
  );
  gauge(
    "sendonce_duplicate_sends",
    "Action keys the provider confirmed more than once (must be 0)",
    [],
    (g, m) => g.set(m.duplicateSends.length),
  );
  gauge("sendonce_retried_actions", "Actions that needed more than one attempt", [], (g, m) =>
    g.set(m.retries.retried),
  );
  gauge("sendonce_retried_actions_sent", "Retried actions that were sent in the end", [], (g, m) =>
    g.set(m.retries.succeeded),
  );
  gauge("sendonce_in_doubt", "Actions whose send may or may not have happened", [], (g, m) =>
    g.set(m.inDoubt),
  );
  gauge(
    "sendonce_reconciliation_mismatches",
    "Mismatches found by sendonce reconcile, by kind",
    ["kind"],
    (g, m) => {
      for (const [kind, n] of Object.entries(m.reconciliationMismatches)) g.set({ kind }, n);
    },
  );
  gauge(
    "sendonce_event_to_send_seconds",
    "Event-to-send latency quantiles over sent messages",
    ["channel", "quantile"],
    (g, m) => {
      for (const [channel, l] of Object.entries(m.latency.byChannel)) {
        for (const q of ["p50", "p95", "p99"] as const) {
          const v = l[q];
          if (v !== null) g.set({ channel, quantile: q.replace("p", "0.") }, v / 1000);
        }
      }
    },
  );
  return registry;
}

function foldSources<
  T extends { source: string; received: number; duplicates: number; conflicts: number },
>(events: T[]) {
  const sorted = [...events].sort((a, b) => b.received - a.received);
  const kept = sorted.slice(0, MAX_SOURCES);
  const rest = sorted.slice(MAX_SOURCES);
  if (rest.length === 0) return kept;
  const sum = (k: "received" | "duplicates" | "conflicts") => rest.reduce((s, e) => s + e[k], 0);
  return [
    ...kept,
    {
      source: "other",
      received: sum("received"),
      duplicates: sum("duplicates"),
      conflicts: sum("conflicts"),
    },
  ];
}
