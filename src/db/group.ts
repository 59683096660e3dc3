// Group transactions: concurrent transactions of different customers run as one, on one
// connection, their statements sent together round by round and committed once. Each is
// written as if alone (`tx`); a group changes how many round trips and commits they cost, not
// what they see: their locks are taken in customer order in the first round, and they touch
// only their own customer's rows. If anything in a group fails, the group is rolled back and
// every member is run again on its own, so one member's error is never another's.
import type pg from "pg";
import type { Sql, Statement } from "./wire";
import { sqlFrom, trip } from "./wire";

/**
 * At most this many transactions share one: enough for a worker at concurrency 50 to start all
 * of its intakes in one group, not two (32 had split them, at 6-14 % of the throughput). Not
 * unbounded: a group that is rolled back runs its members again one by one.
 */
const MAX_GROUP = 64;

type Tx = <T>(fn: (sql: Sql) => Promise<T>) => Promise<T>;

interface Call {
  statements: readonly Statement[];
  /** A `last`: when every member still going is on its last, the COMMIT rides along. */
  last: boolean;
  resolve: (results: pg.QueryResult[]) => void;
  reject: (error: unknown) => void;
}

interface Member {
  key: string;
  fn: (sql: Sql) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
  state: "running" | "waiting" | "done" | "failed";
  call?: Call;
  /** It ran its `last` statement: nothing more may run for it. */
  ended?: boolean;
  result?: unknown;
  error?: unknown;
  /** The run in the group, settled before the member is run again alone. */
  run?: Promise<unknown>;
}

/** Thrown into a member whose group was rolled back; it is then run again alone. */
class GroupAborted extends Error {
  override readonly name = "GroupAborted";
}

/**
 * `grouped(key, fn)`: `fn` in a transaction, shared with others that start in the same turn
 * of the event loop under different keys. The key is the customer the transaction locks first.
 */
export function grouping(
  pool: pg.Pool,
  alone: Tx,
): <T>(key: string, fn: (sql: Sql) => Promise<T>) => Promise<T> {
  let waiting: Member[] = [];
  let scheduled = false;
  const form = () => {
    scheduled = false;
    const members = waiting.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    waiting = [];
    // Sorted, so a key already in a group is that group's last: each group has distinct keys,
    // in the order their locks are taken.
    const groups: Member[][] = [];
    for (const m of members) {
      const group = groups.find((g) => g.length < MAX_GROUP && g[g.length - 1]!.key !== m.key);
      if (group) group.push(m);
      else groups.push([m]);
    }
    for (const group of groups) {
      if (group.length === 1) runAlone(group[0]!);
      else void runGroup(group);
    }
  };
  const runAlone = (m: Member) => {
    alone(m.fn).then(m.resolve, m.reject);
  };
  const runGroup = async (members: Member[]) => {
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch {
      members.forEach(runAlone);
      return;
    }
    const group = new Group(client, members);
    let committed = false;
    try {
      committed = await group.run();
    } finally {
      client.release(group.broken);
    }
    if (committed) {
      for (const m of members) {
        if (m.state === "done") m.resolve(m.result);
        else m.reject(m.error);
      }
      return;
    }
    // Rolled back: each member again on its own, once its run in the group has settled.
    for (const m of members) void (m.run ?? Promise.resolve()).finally(() => runAlone(m));
  };
  return <T>(key: string, fn: (sql: Sql) => Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      waiting.push({
        key,
        fn,
        resolve: resolve as (v: unknown) => void,
        reject,
        state: "running",
      });
      if (!scheduled) {
        scheduled = true;
        setImmediate(form);
      }
    });
}

class Group {
  broken: Error | undefined;
  private begun = false;
  private committed = false;
  private aborted = false;
  private wake: (() => void) | undefined;
  private checking = false;

  constructor(
    private readonly client: pg.PoolClient,
    private readonly members: Member[],
  ) {}

  /** Runs the members round by round; true when all of them finished and the group committed. */
  async run(): Promise<boolean> {
    for (const m of this.members) {
      const sql = this.sqlFor(m);
      m.run = Promise.resolve()
        .then(() => m.fn(sql))
        .then(
          (result) => {
            // A statement still pending was never awaited: alone, it would run before the
            // COMMIT, so here it must not be dropped — the member runs again alone.
            if (m.call) {
              m.call = undefined;
              m.state = "failed";
              m.error = new Error("a statement was not awaited before the transaction ended");
            } else {
              m.state = "done";
              m.result = result;
            }
            this.changed();
          },
          (error: unknown) => {
            m.state = "failed";
            m.error = error;
            this.changed();
          },
        );
    }
    try {
      for (;;) {
        await this.settle();
        // After the COMMIT only a member's own mistake (a statement after its last) can fail.
        if (this.committed) return true;
        if (this.members.some((m) => m.state === "failed")) return await this.abort();
        const calls = this.members.filter((m) => m.state === "waiting");
        if (calls.length === 0) break;
        await this.round(calls);
      }
      if (this.begun && !this.committed) await this.client.query("COMMIT");
      return true;
    } catch {
      return this.abort();
    }
  }

  /** Resolves once no member is running: each is waiting on a statement, done or failed. */
  private settle(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.changed();
    });
  }

  /** A member changed state: once the event loop has turned, see whether all are settled. */
  private changed(): void {
    if (this.checking) return;
    this.checking = true;
    setImmediate(() => {
      this.checking = false;
      if (!this.wake || this.members.some((m) => m.state === "running")) return;
      const wake = this.wake;
      this.wake = undefined;
      wake();
    });
  }

  /** One round trip: every waiting member's statements, in member (lock) order. */
  private async round(waiting: Member[]): Promise<void> {
    const statements = waiting.flatMap((m) => m.call!.statements);
    const finishing =
      waiting.every((m) => m.call!.last) && this.members.every((m) => m.state !== "running");
    const head = this.begun ? [] : ["BEGIN"];
    this.begun = true;
    const results = (await trip(this.client, head, statements, finishing ? ["COMMIT"] : [])).slice(
      head.length,
    );
    if (finishing) this.committed = true;
    let at = 0;
    for (const m of waiting) {
      const call = m.call!;
      m.call = undefined;
      m.state = "running";
      call.resolve(results.slice(at, (at += call.statements.length)));
    }
  }

  private async abort(): Promise<false> {
    this.aborted = true;
    for (const m of this.members) {
      if (m.state !== "waiting") continue;
      m.state = "failed";
      m.call!.reject(new GroupAborted("the group transaction was rolled back"));
    }
    try {
      if (this.begun && !this.committed) await this.client.query("ROLLBACK");
    } catch (error) {
      // The connection itself failed: never hand it out again.
      this.broken = error as Error;
    }
    return false;
  }

  private sqlFor(m: Member): Sql {
    const many = (statements: readonly Statement[], last = false) =>
      new Promise<pg.QueryResult[]>((resolve, reject) => {
        if (this.committed || m.ended) {
          reject(new Error("a statement after the transaction's last"));
          return;
        }
        if (this.aborted || m.state !== "running") {
          reject(new GroupAborted("the group transaction was rolled back"));
          return;
        }
        m.state = "waiting";
        if (last) m.ended = true;
        m.call = { statements, last, resolve, reject };
        this.changed();
      });
    return sqlFrom(many);
  }
}
