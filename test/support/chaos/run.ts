// The chaos run (issue 7): real processes and servers, thousands of events with duplicates
// posted to the API under Idempotency-Keys (some requests posted twice), workers SIGKILLed
// every few seconds; the API SIGKILLed once, Redis flushed once and SIGKILLed once, Postgres
// restarted once, all mid-run; provider failures injected. Then the system settles and the
// verdict is computed.
// Shared by `npm run chaos` (scripts/chaos.ts) and its small variant in test/chaos/.
import type { Cluster, InFlight } from "./cluster";
import { CHAOS_API_KEY, startCluster } from "./cluster";
import { injectFaults } from "./faults";
import type { ChaosEvent, Delivery, QuietWindow } from "./traffic";
import {
  CHAOS_JOURNEYS,
  makeTraffic,
  QUIET_TIMEZONE,
  quietLocal,
  quietPolicies,
  quietWindow,
  random,
} from "./traffic";
import type { Invariant } from "./verify";
import { verify } from "./verify";

export interface ChaosOptions {
  /** Distinct events posted. */
  events: number;
  workers: number;
  /** Share of the events redelivered (later or concurrently). */
  duplicates: number;
  /** A random worker is SIGKILLed about this often (±50 %). */
  killEveryMs: number;
  /** Traffic and chaos last this long; then the system is left to settle. */
  durationMs: number;
  /** Jobs at once per worker process. */
  concurrency: number;
  /** Events per API request. */
  batchSize: number;
  /** How long Postgres stays down at its restart. */
  postgresDownMs: number;
  /** How long Redis stays down after it is killed. */
  redisDownMs: number;
  settleTimeoutMs: number;
  /** Inject SMTP and Twilio failures (retryable, permanent, answered-but-lost). */
  faults: boolean;
  /**
   * Quiet hours for marketing SMS over more than the first half of the traffic, so that held
   * sends wait through the Redis flush and kill. Whole minutes: the window ends up to 60 s later
   * than that, and the run waits for it.
   */
  quietHours: boolean;
  seed: number;
  log: (line: string) => void;
  /** Aborting ends the run early; everything started is still torn down. */
  signal?: AbortSignal;
}

export const DEFAULT_CHAOS: ChaosOptions = {
  events: 3_000,
  workers: 4,
  duplicates: 0.3,
  killEveryMs: 3_000,
  durationMs: 60_000,
  concurrency: 8,
  batchSize: 20,
  postgresDownMs: 3_000,
  redisDownMs: 1_000,
  settleTimeoutMs: 120_000,
  faults: true,
  quietHours: true,
  seed: 7,
  log: () => {},
};

export interface Disruption {
  kind: "kill" | "api_kill" | "redis_flush" | "redis_kill" | "postgres_restart";
  atMs: number;
  detail: string;
}

export interface ChaosReport {
  ok: boolean;
  options: Omit<ChaosOptions, "log" | "signal">;
  /** Traffic and chaos, settling, and the whole run including start and teardown. */
  chaosMs: number;
  settleMs: number;
  totalMs: number;
  stats: Record<string, number>;
  disruptions: Disruption[];
  invariants: Invariant[];
  violations: string[];
}

/**
 * Whether the Redis flush and kill fell inside the quiet hours, so that the SMS held back were
 * held through them: the window is placed before the cluster starts, on a guess of how long
 * that takes.
 */
function heldThrough(quiet: QuietWindow, t0: number, disruptions: Disruption[]): Invariant {
  const at = (kind: Disruption["kind"]) => {
    const d = disruptions.find((x) => x.kind === kind);
    return d ? new Date(t0 + d.atMs) : undefined;
  };
  const [flush, kill] = [at("redis_flush"), at("redis_kill")];
  const inside = (d?: Date) => d !== undefined && d >= quiet.from && d <= quiet.until;
  const time = (d?: Date) => d?.toISOString().slice(11, 19) ?? "none";
  return {
    name: "Redis flush and kill inside the quiet hours",
    expected: `${time(quiet.from)}–${time(quiet.until)}`,
    actual: `${time(flush)}, ${time(kill)}`,
    ok: inside(flush) && inside(kill),
  };
}

/**
 * How long starting the cluster may take, for placing the quiet-hours window: about 8 s on a
 * quiet machine, over 10 s on a busy one, which put the Redis kill past a window placed for 8.
 * Too long only makes the window, and the run, last longer.
 */
const CLUSTER_START_MS = 20_000;

export async function runChaos(partial: Partial<ChaosOptions> = {}): Promise<ChaosReport> {
  const opts: ChaosOptions = { ...DEFAULT_CHAOS, ...partial };
  const started = Date.now();
  const traffic = makeTraffic(opts);
  opts.log(
    `${traffic.events.length} events (${traffic.duplicates} redelivered) for ${traffic.customers.length} customers, ` +
      `${traffic.expected.length} actions expected`,
  );
  // The window is placed before the cluster starts (its workers read the policies then), from
  // the current minute to past 55 % of the traffic: the Redis flush and kill are inside it.
  const quiet = opts.quietHours
    ? quietWindow(Date.now(), CLUSTER_START_MS + opts.durationMs * 0.55)
    : undefined;
  if (quiet) {
    opts.log(
      `quiet hours for marketing SMS ${quietLocal(quiet.from)}–${quietLocal(quiet.until)} ${QUIET_TIMEZONE} ` +
        `(${quiet.from.toISOString()} – ${quiet.until.toISOString()})`,
    );
  }
  const cluster = await startCluster({
    workers: opts.workers,
    concurrency: opts.concurrency,
    journeys: quiet ? { ...CHAOS_JOURNEYS, "policies.yaml": quietPolicies(quiet) } : CHAOS_JOURNEYS,
    log: opts.log,
  });
  try {
    const t0 = Date.now();
    const disruptions: Disruption[] = [];
    const inFlight = { kills: new Set<InFlight>(), restart: new Set<InFlight>() };
    const faults = opts.faults ? injectFaults(cluster, opts.seed) : undefined;
    const [posted, chaos] = await Promise.all([
      postAll(cluster, traffic.deliveries, t0, opts.log, opts.signal),
      disrupt(cluster, opts, t0, disruptions, inFlight, traffic.expected.length),
    ]);
    faults?.stop();
    const chaosMs = Date.now() - t0;
    opts.log(`chaos over after ${(chaosMs / 1000).toFixed(1)} s; settling`);
    const settleStart = Date.now();
    const settled = await settle(cluster, traffic.expected.length, opts);
    const settleMs = Date.now() - settleStart;
    // Anything still travelling to a provider lands now, or never.
    await new Promise((r) => setTimeout(r, 1_500));
    const verdict = await verify({
      query: cluster.query,
      sink: cluster.sink,
      twilio: cluster.twilio,
      messageIdDomain: "shop.example",
      expected: traffic.expected,
      uniqueEvents: traffic.events.length,
      inFlight,
      ...(quiet && { quiet }),
      permanentFaults: faults?.permanent() ?? 0,
    });
    const held = quiet && heldThrough(quiet, t0, disruptions);
    const invariants: Invariant[] = [
      {
        name: "settled within the timeout",
        expected: `≤ ${opts.settleTimeoutMs / 1000} s`,
        actual: settled ? `${(settleMs / 1000).toFixed(1)} s` : "no",
        ok: settled,
      },
      ...(held ? [held] : []),
      ...verdict.invariants,
      {
        name: "repeated requests not answered by a replay of their first answer",
        expected: "0",
        actual: String(posted.notReplayed.length),
        ok: posted.notReplayed.length === 0,
      },
      {
        name: "workers and APIs that died by themselves",
        expected: "0",
        actual: String(cluster.unexpectedExits.length),
        ok: cluster.unexpectedExits.length === 0,
      },
      {
        name: "chaos done: worker kills, API kills, Redis flushes, Redis kills, Postgres restarts",
        expected: "≥ 1 / 1 / 1 / 1 / 1",
        actual: `${chaos.kills} / ${chaos.apiKills} / ${chaos.flushes} / ${chaos.redisKills} / ${chaos.restarts}`,
        ok:
          chaos.kills >= 1 &&
          chaos.apiKills === 1 &&
          chaos.flushes === 1 &&
          chaos.redisKills === 1 &&
          chaos.restarts === 1,
      },
    ];
    const violations = [
      ...(settled ? [] : ["the system did not settle within the timeout"]),
      ...(!held || held.ok
        ? []
        : [
            `the Redis flush and kill (${held.actual}) were not inside the quiet hours (${held.expected})`,
          ]),
      ...verdict.violations,
      ...(posted.notReplayed.length === 0
        ? []
        : [`requests posted again and not replayed: ${posted.notReplayed.slice(0, 5).join(", ")}`]),
      ...cluster.unexpectedExits.map(
        (e) => `${e.who} exited by itself (code ${e.code}):\n${e.tail}`,
      ),
      ...(invariants.at(-1)!.ok ? [] : ["the chaos did not happen as planned"]),
    ];
    return {
      ok: violations.length === 0,
      options: Object.fromEntries(
        Object.entries(opts).filter(([k]) => k !== "log" && k !== "signal"),
      ) as ChaosReport["options"],
      chaosMs,
      settleMs,
      totalMs: Date.now() - started,
      stats: {
        "events (distinct)": traffic.events.length,
        "events posted (with redeliveries)": posted.events,
        "redeliveries planned": traffic.duplicates,
        "API: accepted": posted.accepted,
        "API: duplicate": posted.duplicate,
        "API requests retried (5xx, 409 or no answer)": posted.retries,
        "  409: Idempotency-Key in flight": posted.inFlight,
        "API requests posted again under their Idempotency-Key": posted.repeats,
        "  answered by a replay of the first answer": posted.replayed,
        "workers killed": chaos.kills,
        "  sends in calling at the kills": chaos.callingAtKills,
        "  claims not yet called at the kills": chaos.claimedAtKills,
        "sends in flight at the Postgres restart": chaos.inFlightAtRestart,
        "Redis keys flushed": chaos.keysFlushed,
        "API processes killed": chaos.apiKills,
        "Redis servers killed": chaos.redisKills,
        "worker and API starts refused (Redis or Postgres down)": cluster.startFailures.count,
        "provider faults armed": faults?.armed() ?? 0,
        ...verdict.stats,
      },
      disruptions,
      invariants,
      violations,
    };
  } finally {
    await cluster.close();
  }
}

interface Posted {
  events: number;
  accepted: number;
  duplicate: number;
  retries: number;
  /** 409s: the same Idempotency-Key still in flight (a request the API died in). */
  inFlight: number;
  /** Requests posted again after their answer, and those answered by a replay of it. */
  repeats: number;
  replayed: number;
  /** Repeats whose answer was not the first answer, replayed: the request ids. */
  notReplayed: string[];
}

/**
 * Posts every delivery at its time, several requests at once, each under an Idempotency-Key
 * that its retries keep; a failed request is retried, and some are posted again after their
 * answer.
 */
async function postAll(
  cluster: Cluster,
  deliveries: Delivery[],
  t0: number,
  log: (line: string) => void,
  signal?: AbortSignal,
): Promise<Posted> {
  const posted: Posted = {
    events: 0,
    accepted: 0,
    duplicate: 0,
    retries: 0,
    inFlight: 0,
    repeats: 0,
    replayed: 0,
    notReplayed: [],
  };
  const running = new Set<Promise<void>>();
  let done = 0;
  const post = async (d: Delivery, key: string) => {
    const first = await postBatch(cluster.apiUrl, d.events, key, posted);
    posted.events += d.events.length;
    posted.accepted += first.summary.accepted;
    posted.duplicate += first.summary.duplicate;
    if (!d.repeat) return;
    await new Promise((r) => setTimeout(r, 500));
    const again = await postBatch(cluster.apiUrl, d.events, key, posted);
    posted.repeats += 1;
    // The same answer, to the byte.
    if (again.replayed && again.text === first.text) posted.replayed += 1;
    else posted.notReplayed.push(key);
  };
  for (const [i, d] of deliveries.entries()) {
    const wait = t0 + d.atMs - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    signal?.throwIfAborted();
    while (running.size >= 16) await Promise.race(running);
    const p = post(d, `chaos-${i}`).then(() => {
      running.delete(p);
      done += 1;
      if (done % 50 === 0) log(`posted ${done}/${deliveries.length} requests`);
    });
    running.add(p);
  }
  await Promise.all(running);
  return posted;
}

interface Answer {
  /** The answer's body, and its counts (it also has a result per event). */
  text: string;
  summary: { accepted: number; duplicate: number };
  replayed: boolean;
}

async function postBatch(
  apiUrl: string,
  events: ChaosEvent[],
  key: string,
  posted: Posted,
): Promise<Answer> {
  const body = JSON.stringify({ events });
  const deadline = Date.now() + 120_000;
  // What the last attempt got, for the error if none gets through.
  let last = "";
  for (let attempt = 1; ; attempt++) {
    let wait = Math.min(2_000, 100 * attempt);
    try {
      const res = await fetch(`${apiUrl}/v1/events`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${CHAOS_API_KEY}`,
          "content-type": "application/json",
          "idempotency-key": key,
        },
        body,
        signal: AbortSignal.timeout(30_000),
      });
      if (res.status === 202) {
        const text = await res.text();
        return {
          summary: JSON.parse(text) as Answer["summary"],
          text,
          replayed: res.headers.get("idempotent-replayed") === "true",
        };
      }
      if (res.status === 409) {
        // The key's first request is still in flight, or died with the API: once its lease
        // is over, the key is free again.
        posted.inFlight += 1;
        const after = Number(res.headers.get("retry-after"));
        wait = (Number.isFinite(after) && after > 0 ? after : 1) * 1_000;
      } else if (res.status < 500) {
        // Any other 4xx is a bug in the run itself: every event is valid, every id and every
        // key has one payload.
        throw new Error(`POST /v1/events answered ${res.status}: ${await res.text()}`);
      }
      last = `${res.status} ${(await res.text()).slice(0, 500)}`;
    } catch (error) {
      if ((error as Error).message.startsWith("POST /v1/events answered")) throw error;
      last = (error as Error).message;
    }
    if (Date.now() > deadline)
      throw new Error(`POST /v1/events kept failing for 120 s; the last attempt: ${last}`);
    posted.retries += 1;
    await new Promise((r) => setTimeout(r, wait));
  }
}

interface Chaos {
  kills: number;
  apiKills: number;
  redisKills: number;
  callingAtKills: number;
  claimedAtKills: number;
  inFlightAtRestart: number;
  flushes: number;
  restarts: number;
  keysFlushed: number;
}

/**
 * Kills workers every few seconds; kills the API at a quarter, flushes Redis at 35 %, kills
 * Redis at half and restarts Postgres at 60 % of the traffic.
 */
async function disrupt(
  cluster: Cluster,
  opts: ChaosOptions,
  t0: number,
  disruptions: Disruption[],
  inFlight: { kills: Set<InFlight>; restart: Set<InFlight> },
  expectedActions: number,
): Promise<Chaos> {
  const rand = random(opts.seed * 31 + 1);
  const chaos: Chaos = {
    kills: 0,
    apiKills: 0,
    redisKills: 0,
    callingAtKills: 0,
    claimedAtKills: 0,
    inFlightAtRestart: 0,
    flushes: 0,
    restarts: 0,
    keysFlushed: 0,
  };
  const apiKillAt = opts.durationMs * 0.25;
  const flushAt = opts.durationMs * 0.35;
  const redisKillAt = opts.durationMs * 0.5;
  const restartAt = opts.durationMs * 0.6;
  let nextKill = opts.killEveryMs * (0.5 + rand());
  const elapsed = () => Date.now() - t0;
  const sleepUntil = (ms: number) =>
    new Promise((r) => setTimeout(r, Math.max(0, t0 + ms - Date.now())));
  const note = (kind: Disruption["kind"], detail: string) => {
    disruptions.push({ kind, atMs: elapsed(), detail });
    opts.log(`${(elapsed() / 1000).toFixed(1)} s: ${kind} ${detail}`);
  };
  // After the traffic, kills go on while the workers work off the backlog, so that they keep
  // hitting sends in flight; they stop once 90 % of the actions are final.
  const backlogLeft = async () => {
    const [r] = await cluster
      .query<{ n: string }>(
        `SELECT count(*)::text AS n FROM "Action"
         WHERE state IN ('sent', 'skipped', 'failed_permanent', 'in_doubt')`,
      )
      .catch(() => [{ n: "0" }]);
    return Number(r!.n) < expectedActions * 0.9;
  };
  const lastKillAt = opts.durationMs + opts.settleTimeoutMs / 2;
  for (;;) {
    opts.signal?.throwIfAborted();
    const killing =
      nextKill < lastKillAt &&
      (nextKill < opts.durationMs || elapsed() < opts.durationMs || (await backlogLeft()));
    const pending = [
      chaos.flushes === 0 ? flushAt : Infinity,
      chaos.restarts === 0 ? restartAt : Infinity,
      killing ? nextKill : Infinity,
      chaos.apiKills === 0 ? apiKillAt : Infinity,
      chaos.redisKills === 0 ? redisKillAt : Infinity,
    ];
    const at = Math.min(...pending);
    if (at === Infinity) break;
    await sleepUntil(at);
    // Past the traffic, the backlog is looked at again right before each kill.
    if (at === pending[2] && at >= opts.durationMs && !(await backlogLeft())) break;
    opts.signal?.throwIfAborted();
    if (at === pending[0]) {
      const keys = await cluster.flushRedis();
      chaos.flushes += 1;
      chaos.keysFlushed = keys;
      note("redis_flush", `${keys} keys`);
    } else if (at === pending[3]) {
      const { pid } = await cluster.restartApi();
      chaos.apiKills += 1;
      note("api_kill", `pid ${pid}, a new API on the same port`);
    } else if (at === pending[4]) {
      await cluster.restartRedis(opts.redisDownMs);
      chaos.redisKills += 1;
      note("redis_kill", `down ${opts.redisDownMs} ms, a new redis-server on the same port`);
    } else if (at === pending[1]) {
      const r = await cluster.restartPostgres(opts.postgresDownMs);
      for (const f of r.inFlight) inFlight.restart.add(f);
      chaos.restarts += 1;
      chaos.inFlightAtRestart = r.inFlight.length;
      note(
        "postgres_restart",
        `${r.inFlight.length} sends in flight, down ${opts.postgresDownMs} ms`,
      );
    } else {
      const slot = Math.floor(rand() * cluster.workers.length);
      const k = await cluster.killWorker(slot);
      for (const f of k.calling) inFlight.kills.add(f);
      chaos.kills += 1;
      chaos.callingAtKills += k.calling.length;
      chaos.claimedAtKills += k.claimed;
      note(
        "kill",
        `worker ${slot} pid ${k.pid}: ${k.calling.length} calling, ${k.claimed} claimed`,
      );
      nextKill = elapsed() + opts.killEveryMs * (0.5 + rand());
    }
  }
  return chaos;
}

/** Waits until every event is processed, no enrollment is active and every action is final. */
async function settle(
  cluster: Cluster,
  expected: number,
  { settleTimeoutMs, log, signal }: ChaosOptions,
): Promise<boolean> {
  const deadline = Date.now() + settleTimeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    try {
      const [s] = await cluster.query<{ events: string; active: string; final: string }>(
        `SELECT (SELECT count(*) FROM "Event" WHERE "processedAt" IS NULL)::text AS events,
                (SELECT count(*) FROM "Enrollment" WHERE status = 'active')::text AS active,
                (SELECT count(*) FROM "Action"
                 WHERE state IN ('sent', 'skipped', 'failed_permanent', 'in_doubt'))::text AS final`,
      );
      const line = `settling: ${s!.events} events unprocessed, ${s!.active} enrollments active, ${s!.final}/${expected} actions final`;
      if (line !== last) log(line);
      last = line;
      if (s!.events === "0" && s!.active === "0" && Number(s!.final) >= expected) return true;
    } catch {
      // the database may still be coming back from its restart
    }
    await new Promise((r) => setTimeout(r, 1_000));
  }
  return false;
}
