// A whole deployment of its own for the chaos run: an embedded Postgres on a fixed port (so a
// restart keeps its address), a child redis-server, a real SMTP server, a Twilio-compatible
// server, one `sendonce api` and N `sendonce worker` processes — and the ways to hurt it.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import pg from "pg";
import { migrate } from "../../../src/db/migrate";
import type { RunningService } from "../../../src/infra/embedded";
import { freePort, startEmbeddedPostgres, startRedisServer } from "../../../src/infra/embedded";
import { startSmtpSink } from "../smtp";
import type { SmtpSink } from "../smtp";
import { startTwilioServer } from "../twilio";
import type { TwilioServer } from "../twilio";
import type { WorkerProcess } from "../workers";
import { startProcess } from "../workers";

export const CHAOS_API_KEY = "chaos-api-key-0123456789abcdef";
const SECRET = "chaos-secret-0123456789abcdef0123456789abcdef";

export interface ClusterOptions {
  workers: number;
  /** Jobs at once per worker process. */
  concurrency: number;
  journeys: Record<string, string>;
  /** Progress lines (ids and counts only). */
  log: (line: string) => void;
}

/** A send found half-done at a disruption: `key#attempt`. */
export type InFlight = string;

export interface KillResult {
  pid: number;
  /** Actions the killed process had in `calling`: they may end in_doubt. */
  calling: InFlight[];
  /** Actions it had claimed but not yet called: safely retried. */
  claimed: number;
}

export interface Cluster {
  databaseUrl: string;
  redisUrl: string;
  apiUrl: string;
  sink: SmtpSink;
  twilio: TwilioServer;
  /** Live worker processes by slot. */
  workers: WorkerProcess[];
  /** Running workers that died without being killed (and were restarted). */
  /** Processes that died by themselves once running: `worker 0`, `api`. */
  unexpectedExits: { who: string; code: number | null; tail: string }[];
  /** Workers that exited before they started (the database was down), and were started again. */
  startFailures: { count: number };
  query: <T extends pg.QueryResultRow>(sql: string, params?: unknown[]) => Promise<T[]>;
  /**
   * SIGKILLs the worker in `slot`, measures what it had in flight, and starts a new one
   * (without waiting for it to be ready).
   */
  killWorker(slot: number): Promise<KillResult>;
  /** FLUSHALL: every queue, job, delayed step and lock is gone. */
  flushRedis(): Promise<number>;
  /** Fast shutdown of Postgres, `downMs` of nothing, then the same server on the same port. */
  restartPostgres(downMs: number): Promise<{ inFlight: InFlight[] }>;
  /**
   * SIGKILLs redis-server (what its append-only file had not yet written is lost), `downMs`
   * of nothing, then a new one on the same port and directory.
   */
  restartRedis(downMs: number): Promise<void>;
  /** SIGKILLs the API mid-traffic and starts a new one on the same port (not waiting for it). */
  restartApi(): Promise<{ pid: number }>;
  close(): Promise<void>;
}

export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const stopped: (() => Promise<unknown>)[] = [];
  const stopAll = async () => {
    for (const stop of stopped.reverse()) await stop().catch(() => {});
    stopped.length = 0;
  };
  try {
    return await build(opts, stopped, stopAll);
  } catch (error) {
    await stopAll();
    throw error;
  }
}

async function build(
  opts: ClusterOptions,
  stopped: (() => Promise<unknown>)[],
  stopAll: () => Promise<void>,
): Promise<Cluster> {
  // As root the server runs as "postgres", which must be able to enter the state directory.
  const stateDir = mkdtempSync(join(tmpdir(), "sendonce-chaos-"));
  chmodSync(stateDir, 0o755);
  stopped.push(() => Promise.resolve(rmSync(stateDir, { recursive: true, force: true })));
  const journeysDir = join(stateDir, "journeys");
  mkdirSync(journeysDir);
  for (const [name, text] of Object.entries(opts.journeys))
    writeFileSync(join(journeysDir, name), text);

  const pgPort = await freePort();
  let postgres: RunningService = await startEmbeddedPostgres(stateDir, { port: pgPort });
  stopped.push(() => postgres.stop());
  const databaseUrl = postgres.url;
  await migrate(databaseUrl);
  let redis = await startRedisServer(stateDir);
  stopped.push(() => redis.stop());
  const redisPort = Number(new URL(redis.url).port);
  let redisPid = await serverPid(redis.url);
  const sink = await startSmtpSink();
  stopped.push(() => sink.close());
  const twilio = await startTwilioServer();
  stopped.push(() => twilio.close());
  opts.log(`postgres :${pgPort}, redis ${new URL(redis.url).port}, smtp and twilio started`);

  const pool = new pg.Pool({ connectionString: databaseUrl, max: 3 });
  // Idle connections die with the server on the restart; the pool replaces them.
  pool.on("error", () => {});
  stopped.push(() => pool.end());

  // Each worker holds a pool; N workers, the API and this runner fit in max_connections 100.
  const poolSize = Math.max(4, Math.min(12, Math.floor(60 / opts.workers)));
  const env: NodeJS.ProcessEnv = {
    DATABASE_URL: databaseUrl,
    REDIS_URL: redis.url,
    SENDONCE_QUEUE_PREFIX: "chaos",
    SENDONCE_STATE_DIR: stateDir,
    SENDONCE_JOURNEYS_DIR: journeysDir,
    SMTP_URL: sink.url,
    EMAIL_FROM: "Chaos Shop <news@shop.example>",
    TWILIO_ACCOUNT_SID: twilio.accountSid,
    TWILIO_AUTH_TOKEN: twilio.authToken,
    TWILIO_FROM: "+15005550006",
    TWILIO_API_BASE_URL: twilio.url,
    PUBLIC_BASE_URL: "https://hooks.shop.example",
    SENDONCE_SECRET: SECRET,
    SENDONCE_API_KEYS: CHAOS_API_KEY,
    SENDONCE_DB_POOL_SIZE: String(poolSize),
    // Short leases so crashed work is taken over within the run; a send timeout well above
    // what a loaded 2-core machine needs, so in_doubt comes from the chaos, not from load.
    SENDONCE_LEASE_MS: "2000",
    SENDONCE_SEND_TIMEOUT_MS: "8000",
    SENDONCE_SWEEP_INTERVAL_MS: "1000",
    SENDONCE_RETRY_BASE_MS: "300",
    SENDONCE_INDOUBT_GRACE_MS: "1000",
  };

  const workers: WorkerProcess[] = [];
  let api: WorkerProcess | undefined;
  // Whatever way this process ends (Ctrl-C, a crash, process.exit by a library's exit hook),
  // nothing it started may outlive it: only synchronous work is possible here.
  const onExit = () => {
    for (const w of [...workers, ...(api ? [api] : [])])
      if (w.child.exitCode === null) w.child.kill("SIGKILL");
    try {
      process.kill(redisPid, "SIGKILL");
    } catch {
      // already gone
    }
    rmSync(stateDir, { recursive: true, force: true });
  };
  process.once("exit", onExit);
  stopped.push(() => Promise.resolve(process.removeListener("exit", onExit)));
  const killing = new Set<WorkerProcess>();
  const unexpectedExits: Cluster["unexpectedExits"] = [];
  const startFailures = { count: 0 };
  let closing = false;
  const spawnWorker = (slot: number): WorkerProcess => {
    const w = startProcess("worker", env, ["--concurrency", String(opts.concurrency)]);
    workers[slot] = w;
    void w.exited.then(async (code) => {
      if (closing || killing.has(w) || workers[slot] !== w) return;
      if (!w.output().includes("worker started")) {
        // Refusing to start while the database is down is fair; a supervisor starts it again.
        startFailures.count += 1;
        opts.log(`worker ${slot} (pid ${w.child.pid}) could not start; again in 1 s`);
        await new Promise((r) => setTimeout(r, 1_000));
      } else {
        // Once running, a worker must survive anything the chaos does to Postgres and Redis.
        unexpectedExits.push({
          who: `worker ${slot}`,
          code,
          tail: w.output().split("\n").slice(-60).join("\n"),
        });
        opts.log(`worker ${slot} (pid ${w.child.pid}) exited by itself with code ${code}`);
      }
      if (!closing) spawnWorker(slot);
    });
    return w;
  };
  stopped.push(async () => {
    closing = true;
    await Promise.all(workers.map((w) => w.kill("SIGKILL")));
  });
  // The API, like a worker, may refuse to start while Redis or Postgres is down (a supervisor
  // starts it again); once listening, it must survive whatever the chaos does.
  const apiPort = await freePort();
  const startApi = (): WorkerProcess => {
    const a = startProcess("api", env, ["--port", String(apiPort), "--host", "127.0.0.1"]);
    api = a;
    void a.exited.then(async (code) => {
      if (closing || killing.has(a) || api !== a) return;
      if (!a.output().includes("api listening")) {
        startFailures.count += 1;
        opts.log(`api (pid ${a.child.pid}) could not start; again in 1 s`);
        await new Promise((r) => setTimeout(r, 1_000));
      } else {
        unexpectedExits.push({
          who: "api",
          code,
          tail: a.output().split("\n").slice(-60).join("\n"),
        });
        opts.log(`api (pid ${a.child.pid}) exited by itself with code ${code}`);
      }
      if (!closing) startApi();
    });
    return a;
  };
  stopped.push(async () => {
    closing = true;
    await api?.kill("SIGKILL");
  });
  await startApi().waitFor(/api listening/, 30_000);
  for (let slot = 0; slot < opts.workers; slot++) spawnWorker(slot);
  await Promise.all(workers.map((w) => w.waitFor(/worker started/, 60_000)));
  opts.log(`api on :${apiPort}, ${opts.workers} workers started`);

  const query = async <T extends pg.QueryResultRow>(sql: string, params: unknown[] = []) =>
    (await pool.query<T>(sql, params)).rows;

  /** Retries a read that may meet the server mid-restart. */
  const steadyQuery = async <T extends pg.QueryResultRow>(sql: string, params: unknown[] = []) => {
    for (let i = 0; ; i++) {
      try {
        return await query<T>(sql, params);
      } catch (error) {
        if (i >= 50) throw error;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };

  return {
    databaseUrl,
    redisUrl: redis.url,
    apiUrl: `http://127.0.0.1:${apiPort}`,
    sink,
    twilio,
    workers,
    unexpectedExits,
    startFailures,
    query,
    async killWorker(slot) {
      const w = workers[slot]!;
      const pid = w.child.pid!;
      killing.add(w);
      await w.kill("SIGKILL");
      // Dead: it sends nothing more. Its workerId is `${host}-${pid}-${4 hex}`.
      const held = () =>
        steadyQuery<{ key: string; attempt: number; state: string }>(
          `SELECT key, attempt, state FROM "Action"
           WHERE "workerId" LIKE $1 AND state IN ('calling', 'claimed')`,
          [`%-${pid}-____`],
        );
      const rows = await held();
      // The replacement starts while the chaos goes on: a slow start does not space out the
      // kills (one that fails to start is started again by spawnWorker).
      spawnWorker(slot);
      // A statement it had already sent (a call-started mark waiting on a lock) still commits
      // after the kill: a call it started then is in flight at the kill too. Looked at again
      // once Postgres has run what it was sent (no call lease runs out that soon).
      await new Promise((r) => setTimeout(r, 1_000));
      const calling = new Set(
        [...rows, ...(await held())]
          .filter((r) => r.state === "calling")
          .map((r) => `${r.key}#${r.attempt}`),
      );
      return {
        pid,
        calling: [...calling],
        claimed: rows.filter((r) => r.state === "claimed").length,
      };
    },
    async flushRedis() {
      const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
      try {
        const keys = await client.dbsize();
        await client.flushall();
        return keys;
      } finally {
        client.disconnect();
      }
    },
    async restartRedis(downMs) {
      process.kill(redisPid, "SIGKILL");
      // Gone once the port refuses connections.
      while (
        await serverPid(redis.url).then(
          () => true,
          () => false,
        )
      )
        await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, downMs));
      redis = await startRedisServer(stateDir, undefined, redisPort);
      redisPid = await serverPid(redis.url);
    },
    async restartApi() {
      const old = api!;
      killing.add(old);
      await old.kill("SIGKILL");
      // Requests meanwhile fail and are posted again.
      startApi();
      return { pid: old.child.pid! };
    },
    async restartPostgres(downMs) {
      const measuredAt = new Date(Date.now() - 50);
      const before = await query<{ key: string; attempt: number }>(
        `SELECT key, attempt FROM "Action" WHERE state = 'calling'`,
      );
      await postgres.stop();
      const stoppedAt = new Date();
      await new Promise((r) => setTimeout(r, downMs));
      postgres = await startEmbeddedPostgres(stateDir, { port: pgPort });
      // Calls that started between the measurement and the shutdown were in flight too.
      const late = await steadyQuery<{ key: string; attempt: number }>(
        `SELECT "actionKey" AS key, attempt FROM "ActionAttempt"
         WHERE "startedAt" >= $1 AND "startedAt" <= $2`,
        [measuredAt, stoppedAt],
      );
      const inFlight = new Set([...before, ...late].map((r) => `${r.key}#${r.attempt}`));
      return { inFlight: [...inFlight] };
    },
    close: stopAll,
  };
}

/** The pid of the redis-server behind `url`, from INFO; fails when nothing answers there. */
async function serverPid(url: string): Promise<number> {
  const client = new Redis(url, {
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
    lazyConnect: true,
  });
  // A server going away resets the connection: that is the answer, not an error to print.
  client.on("error", () => {});
  try {
    await client.connect();
    const info = await client.info("server");
    return Number(/process_id:(\d+)/.exec(info)![1]);
  } finally {
    client.disconnect();
  }
}
