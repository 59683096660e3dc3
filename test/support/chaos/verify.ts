// The verdict of a chaos run: what the SMTP and SMS servers really received per action key,
// against the ledger and against what the events and journeys ask for (DESIGN §3's guarantee).
import type pg from "pg";
import { DEFAULT_TUNING } from "../../../src/engine/engine";
import { UNMATCHED } from "../../../src/ledger/provider-match";
import type { SmtpSink } from "../smtp";
import type { TwilioServer } from "../twilio";
import type { InFlight } from "./cluster";
import type { ExpectedAction, QuietWindow } from "./traffic";
import { heldInQuietHours, QUIET_TIMEZONE, quietLocal } from "./traffic";

/** One line of the summary table. */
export interface Invariant {
  name: string;
  expected: string;
  actual: string;
  ok: boolean;
}

export interface Verdict {
  invariants: Invariant[];
  /** One line per broken invariant, with a few example ids. */
  violations: string[];
  stats: Record<string, number>;
}

export interface VerifyInput {
  query: <T extends pg.QueryResultRow>(sql: string, params?: unknown[]) => Promise<T[]>;
  sink: SmtpSink;
  twilio: TwilioServer;
  /** `<key@domain>` of an email's Message-ID. */
  messageIdDomain: string;
  expected: ExpectedAction[];
  uniqueEvents: number;
  /** Every send half-done at a kill, and at the Postgres restart: `key#attempt`. */
  inFlight: { kills: Set<InFlight>; restart: Set<InFlight> };
  /** The run's quiet hours for marketing SMS, if it had any. */
  quiet?: QuietWindow;
  /** How many refusals for good the providers were told to give (each for one send). */
  permanentFaults: number;
}

/**
 * Why an action may end failed_permanent in a chaos run: a provider's refusal; a "try later"
 * that came back after another worker had taken the call as in doubt, with no run left to
 * retry it; "try later" on every one of its attempts. Anything else (fewer attempts, an
 * opt-out nobody sent) is the engine giving up.
 */
function explainedFailure(r: ActionRow): boolean {
  if (r.reason === "retries_exhausted") return r.attempt >= DEFAULT_TUNING.maxAttempts;
  return r.reason === "provider_refused" || r.reason === "retry_missed";
}

const FINAL = new Set(["sent", "skipped", "failed_permanent", "in_doubt"]);

interface ActionRow {
  key: string;
  customerId: string;
  channel: "email" | "sms" | "points";
  state: string;
  reason: string | null;
  attempt: number;
}

/** An invariant's line, and a few offenders to name when it is broken. */
type Check = [name: string, expected: string, actual: string, ok: boolean, bad: string[]];

/** At most a few ids of the offenders, for the violation line. */
function examples(ids: string[]): string {
  const shown = ids.slice(0, 5).map((id) => id.slice(0, 16));
  return `${shown.join(", ")}${ids.length > shown.length ? `, … (${ids.length})` : ""}`;
}

export async function verify(input: VerifyInput): Promise<Verdict> {
  const invariants: Invariant[] = [];
  const violations: string[] = [];
  const check = (...[name, expected, actual, ok, bad]: Check) => {
    invariants.push({ name, expected, actual, ok });
    if (!ok) violations.push(`${name}: expected ${expected}, got ${actual}; e.g. ${examples(bad)}`);
  };
  const zero = (name: string, bad: string[]) =>
    check(name, "0", String(bad.length), bad.length === 0, bad);

  const rows = await input.query<ActionRow>(
    `SELECT key, "customerId", channel, state, reason, attempt FROM "Action"`,
  );
  const ledger = new Map(rows.map((r) => [r.key, r]));
  const expected = new Map(input.expected.map((e) => [e.key, e]));

  // What the providers received, per action key.
  const received = new Map<string, number>();
  const suffix = `@${input.messageIdDomain}>`;
  const foreign: string[] = [];
  for (const [id, n] of input.sink.countByMessageId()) {
    if (id.startsWith("<") && id.endsWith(suffix)) received.set(id.slice(1, -suffix.length), n);
    else foreign.push(id);
  }
  for (const m of input.twilio.messages) {
    if (!m.actionKey) foreign.push(m.sid);
    else received.set(m.actionKey, (received.get(m.actionKey) ?? 0) + 1);
  }
  const emails = input.sink.messages.length;
  const texts = input.twilio.messages.length;

  zero(
    "duplicate sends received (email + SMS)",
    [...received].filter(([, n]) => n > 1).map(([k]) => k),
  );
  zero("messages received for no expected action", [
    ...foreign,
    ...[...received.keys()].filter((k) => !expected.has(k)),
  ]);

  const missing = input.expected.filter((e) => !ledger.has(e.key)).map((e) => e.key);
  const unsettled = input.expected
    .filter((e) => ledger.has(e.key) && !FINAL.has(ledger.get(e.key)!.state))
    .map((e) => `${e.key.slice(0, 12)}:${ledger.get(e.key)!.state}`);
  const settled = input.expected.length - missing.length - unsettled.length;
  check(
    "expected actions in a final state",
    String(input.expected.length),
    String(settled),
    settled === input.expected.length,
    [...missing.map((k) => `${k.slice(0, 12)}:missing`), ...unsettled],
  );
  // A wrong failed_permanent would pass as final: its reason and count must be the faults'.
  const failed = rows.filter((r) => r.state === "failed_permanent");
  zero(
    "failed_permanent that no fault explains",
    failed.filter((r) => !explainedFailure(r)).map((r) => `${r.key}:${r.reason}`),
  );
  const refused = failed.filter((r) => r.reason === "provider_refused");
  check(
    "refused for good ≤ refusals the providers were told to give",
    `≤ ${input.permanentFaults}`,
    String(refused.length),
    refused.length <= input.permanentFaults,
    refused.map((r) => r.key),
  );
  zero(
    "ledger actions no event asked for",
    rows.filter((r) => !expected.has(r.key)).map((r) => r.key),
  );

  // Skips are decided by the profile (address, consent), whatever the chaos did.
  const wrongSkip = input.expected
    .filter((e) => {
      const r = ledger.get(e.key);
      if (!r) return false;
      if (!e.expect.allowed) return r.state !== "skipped" || r.reason !== e.expect.reason;
      return r.state === "skipped" && !(e.expect.cap && r.reason === "frequency_cap");
    })
    .map((e) => `${e.key.slice(0, 12)}:${ledger.get(e.key)!.state}/${ledger.get(e.key)!.reason}`);
  zero("skips that disagree with consent, address and cap", wrongSkip);

  // A frequency cap, counted by what the provider received: never more than the cap per
  // customer (an in_doubt send counts, it may have gone out). And a cap skip only once the cap
  // was full: before the skip's audit entry, at least the cap's number of the customer's other
  // capped actions had been claimed. Claims of one customer hold their lock, so their audit
  // entries' ids follow the order of the decisions. (A claim that later failed for good counts
  // here, though the engine stops counting it then: this check cannot tell a skip that came
  // after such a failure.)
  const capped = new Map<string, { cap: number; out: number; skips: number }>();
  const capOf = new Map<string, { customerId: string; cap: number }>();
  for (const e of input.expected) {
    if (!e.expect.allowed || !e.expect.cap) continue;
    capOf.set(e.key, { customerId: e.customerId, cap: e.expect.cap });
    const c = capped.get(e.customerId) ?? { cap: e.expect.cap, out: 0, skips: 0 };
    capped.set(e.customerId, c);
    const row = ledger.get(e.key);
    if (received.has(e.key) || row?.state === "in_doubt") c.out += 1;
    if (row?.state === "skipped" && row.reason === "frequency_cap") c.skips += 1;
  }
  zero(
    "customers sent more capped emails than the cap",
    [...capped].filter(([, c]) => c.out > c.cap).map(([id, c]) => `${id}:${c.out}`),
  );
  const decisions = await input.query<{ kind: string; rule: string | null; actionKey: string }>(
    `SELECT kind, rule, "actionKey" FROM "AuditEntry"
     WHERE kind IN ('step_claimed', 'skipped') AND "actionKey" = ANY($1) ORDER BY id`,
    [[...capOf.keys()]],
  );
  const claimedBy = new Map<string, Set<string>>();
  const early: string[] = [];
  for (const d of decisions) {
    const e = capOf.get(d.actionKey)!;
    const claimed = claimedBy.get(e.customerId) ?? new Set<string>();
    claimedBy.set(e.customerId, claimed);
    if (d.kind === "step_claimed") claimed.add(d.actionKey);
    else if (d.rule === "frequency_cap") {
      const others = [...claimed].filter((k) => k !== d.actionKey).length;
      if (others < e.cap) early.push(`${e.customerId}:${others}`);
    }
  }
  zero("cap skips before the cap was full", early);

  const quiet = input.quiet ? await quietHours(input, input.quiet) : undefined;
  if (quiet) for (const c of quiet.checks) check(...c);

  const sends = rows.filter((r) => r.channel !== "points");
  const sentSends = sends.filter((r) => r.state === "sent");
  const dropped = sentSends.filter((r) => !received.has(r.key)).map((r) => r.key);
  check(
    "sent actions the provider received",
    String(sentSends.length),
    String(sentSends.length - dropped.length),
    dropped.length === 0,
    dropped,
  );
  zero(
    "received sends the ledger does not call sent or in_doubt",
    sends
      .filter((r) => received.has(r.key) && r.state !== "sent" && r.state !== "in_doubt")
      .map((r) => `${r.key.slice(0, 12)}:${r.state}`),
  );

  const inDoubt = rows.filter((r) => r.state === "in_doubt");
  const inFlight = new Set([...input.inFlight.kills, ...input.inFlight.restart]);
  const inFlightAt = (set: Set<InFlight>) =>
    inDoubt.filter((r) => set.has(`${r.key}#${r.attempt}`)).length;
  check(
    "in_doubt ≤ sends in flight at kills and restart",
    `≤ ${inFlight.size}`,
    String(inDoubt.length),
    inDoubt.length <= inFlight.size,
    inDoubt.map((r) => r.key),
  );
  zero(
    "in_doubt not in flight at any kill or restart",
    inDoubt.filter((r) => !inFlight.has(`${r.key}#${r.attempt}`)).map((r) => r.key),
  );
  // The Twilio-compatible server never changes a body, and each customer has a number of their
  // own: every message to it is explained, and the look-up never holds a text for a person.
  zero(
    "SMS held for a person though no body was changed",
    inDoubt.filter((r) => r.reason === UNMATCHED).map((r) => r.key),
  );

  // Points: balance = ledger entries = what the journeys grant for the points actions.
  const entries = await input.query<{ customerId: string; total: string; n: string }>(
    `SELECT "customerId", sum(amount)::text AS total, count(*)::text AS n FROM "PointsEntry" GROUP BY 1`,
  );
  const balances = await input.query<{ customerId: string; balance: number }>(
    `SELECT "customerId", balance FROM "PointsBalance"`,
  );
  const ledgerSum = new Map(entries.map((e) => [e.customerId, Number(e.total)]));
  const balanceOf = new Map(balances.map((b) => [b.customerId, b.balance]));
  const grants = new Map<string, number>();
  for (const e of input.expected)
    if (e.points > 0) grants.set(e.customerId, (grants.get(e.customerId) ?? 0) + e.points);
  const customers = new Set([...ledgerSum.keys(), ...balanceOf.keys(), ...grants.keys()]);
  zero(
    "points balances ≠ sum of ledger entries",
    [...customers].filter((c) => (balanceOf.get(c) ?? 0) !== (ledgerSum.get(c) ?? 0)),
  );
  zero(
    "points balances ≠ points the journeys grant",
    [...customers].filter((c) => (balanceOf.get(c) ?? 0) !== (grants.get(c) ?? 0)),
  );

  const [events] = await input.query<{ stored: string; unprocessed: string; dups: string }>(
    `SELECT (SELECT count(*) FROM "Event")::text AS stored,
            (SELECT count(*) FROM "Event" WHERE "processedAt" IS NULL)::text AS unprocessed,
            (SELECT count(*) FROM "EventDuplicate")::text AS dups`,
  );
  check(
    "events stored once each, all processed",
    `${input.uniqueEvents} / 0 left`,
    `${events!.stored} / ${events!.unprocessed} left`,
    Number(events!.stored) === input.uniqueEvents && Number(events!.unprocessed) === 0,
    [],
  );

  const count = (pred: (r: ActionRow) => boolean) => rows.filter(pred).length;
  const stats: Record<string, number> = {
    "actions expected": input.expected.length,
    "actions sent": count((r) => r.state === "sent"),
    "  of which email": count((r) => r.state === "sent" && r.channel === "email"),
    "  of which SMS": count((r) => r.state === "sent" && r.channel === "sms"),
    "  of which points": count((r) => r.state === "sent" && r.channel === "points"),
    "  SMS found at the provider after in_doubt": count((r) => r.reason === "found_at_provider"),
    "  sent after a retry": count((r) => r.state === "sent" && r.attempt > 1),
    "actions skipped": count((r) => r.state === "skipped"),
    "  no_consent": count((r) => r.reason === "no_consent"),
    "  no_address": count((r) => r.reason === "no_address"),
    "  frequency_cap": count((r) => r.reason === "frequency_cap"),
    "customers skipped for the offer cap": [...capped.values()].filter((c) => c.skips > 0).length,
    "actions failed_permanent": count((r) => r.state === "failed_permanent"),
    "actions in_doubt": inDoubt.length,
    // A send still calling at a kill and at the restart counts under both.
    "  in flight at a kill": inFlightAt(input.inFlight.kills),
    "  in flight at the Postgres restart": inFlightAt(input.inFlight.restart),
    "emails received by SMTP": emails,
    "SMS received by Twilio": texts,
    "event duplicates recorded": Number(events!.dups),
    ...(quiet && { "marketing SMS held for quiet hours": quiet.held }),
  };
  return { invariants, violations, stats };
}

/**
 * Quiet hours, judged by the decisions' own times and by when the SMS server received each
 * message: no marketing SMS claimed inside the window (a retry re-checks too), every one held
 * back delayed to the window's end and received after it. A claim made just before the window
 * may still reach the server inside it: that is the claim's time that counts.
 */
async function quietHours(
  input: VerifyInput,
  w: QuietWindow,
): Promise<{ held: number; checks: Check[] }> {
  const keys = input.expected.filter(heldInQuietHours).map((e) => e.key);
  const audits = await input.query<{
    kind: string;
    rule: string | null;
    actionKey: string;
    at: Date;
    detail: { until?: string };
  }>(
    `SELECT kind, rule, "actionKey", at, detail FROM "AuditEntry"
     WHERE kind IN ('step_claimed', 'delayed') AND "actionKey" = ANY($1) ORDER BY id`,
    [keys],
  );
  const inside = (at: Date) => at >= w.from && at < w.until;
  const claimedInside = audits
    .filter((a) => a.kind === "step_claimed" && inside(new Date(a.at)))
    .map((a) => a.actionKey);
  const delays = audits.filter((a) => a.kind === "delayed" && a.rule === "quiet_hours");
  const held = new Set(delays.map((a) => a.actionKey));
  const notToTheEnd = delays
    .filter((a) => a.detail.until === undefined || Date.parse(a.detail.until) !== w.until.getTime())
    .map((a) => `${a.actionKey.slice(0, 12)}:${a.detail.until}`);
  const early = input.twilio.messages
    .filter((m) => m.actionKey && held.has(m.actionKey) && m.dateCreated < w.until)
    .map((m) => m.actionKey!);
  const span = `${quietLocal(w.from)}–${quietLocal(w.until)} ${QUIET_TIMEZONE}`;
  const zero = (name: string, bad: string[]): Check => [
    name,
    "0",
    String(bad.length),
    bad.length === 0,
    bad,
  ];
  return {
    held: held.size,
    checks: [
      zero(`marketing SMS claimed in quiet hours (${span})`, claimedInside),
      ["marketing SMS held back by quiet hours", "≥ 1", String(held.size), held.size > 0, []],
      zero("quiet-hours delays not to the window's end", notToTheEnd),
      zero("held SMS received before the window's end", early),
    ],
  };
}

/** The summary table: invariant, expected, actual, ok. */
export function formatTable(invariants: Invariant[]): string {
  const head = ["invariant", "expected", "actual", "ok"];
  const body = invariants.map((i) => [i.name, i.expected, i.actual, i.ok ? "ok" : "VIOLATED"]);
  const widths = head.map((h, c) => Math.max(h.length, ...body.map((r) => r[c]!.length)));
  const line = (r: string[]) => r.map((cell, c) => cell.padEnd(widths[c]!)).join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}
