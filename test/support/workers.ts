// Real `sendonce worker` child processes, as production runs them: tests SIGKILL them, wait
// for what they log, and read the database they share.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { ROOT } from "./cli";

const BIN = fileURLToPath(new URL("../../bin/sendonce.js", import.meta.url));

export interface WorkerProcess {
  child: ChildProcess;
  /** Everything the worker wrote to stderr so far. */
  output(): string;
  /** Resolves with the first log line matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  /** Resolves with the exit code when the process ends by itself. */
  exited: Promise<number | null>;
}

export function startWorker(env: NodeJS.ProcessEnv, args: string[] = []): WorkerProcess {
  return startProcess("worker", env, args);
}

/** Any long-running `sendonce` command (worker, api) as a child process. */
export function startProcess(
  command: string,
  env: NodeJS.ProcessEnv,
  args: string[] = [],
): WorkerProcess {
  const child = spawn(process.execPath, [BIN, command, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const waiters = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    output += chunk.toString();
    for (const w of waiters) w();
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => resolve(code)),
  );
  return {
    child,
    output: () => output,
    waitFor(pattern, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const line = output.split("\n").find((l) => pattern.test(l));
          if (line === undefined) return false;
          cleanup();
          resolve(line);
          return true;
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(
            new Error(
              `worker did not log ${pattern} within ${timeoutMs} ms; it logged:\n${output}`,
            ),
          );
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        if (!check()) waiters.add(check);
      });
    },
    exited,
    async kill(signal = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Polls `probe` until it returns a value other than undefined. */
export async function eventually<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 20_000,
  what = "condition",
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
