// Backfills against real workers: the dry run's counts are what the real run then does, a
// rerun sends nothing, overlapping runs send each message once, and a killed run resumes.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { actionKey } from "../../src/engine/keys";
import { storeEvent } from "../../src/ingest/store";
import { parseEvent } from "../../src/ingest/event";
import { runCli } from "../support/cli";
import { settledOutcome, useHarness } from "../support/harness";
import { journeysDir } from "../support/journeys";
import { eventually, startProcess } from "../support/workers";

/** The order follow-up journey, its email's subject starting with `thanks`. */
const promo = (thanks: string) => `
id: promo
name: Order follow-up
category: marketing
consent: promotions
trigger: { event: order.completed }
entry: { once: per_reference, reference: "{{ event.properties.order_id }}" }
steps:
  - id: thanks
    email: { subject: "${thanks} {{ event.properties.order_id }}", text: "Thank you" }
  - id: bonus
    points: { amount: 5, reason: promo }
`;

const JOURNEYS = journeysDir({
  "promo.yaml": promo("Thanks for"),
  "nudge.yaml": `
id: nudge
name: Cart nudge
category: marketing
consent: promotions
trigger: { event: cart.updated }
entry: { once: per_reference, reference: "{{ event.properties.cart_id }}" }
exit:
  - event: order.completed
    when: "string(event.properties.cart_id) == enrollment.reference"
steps:
  - id: wait
    wait: 1h
  - id: remind
    email: { subject: "Your cart", text: "Still there" }
`,
});

const order = (n: number, consent: boolean, at = "2026-10-01T10:00:00Z") =>
  parseEvent({
    id: `hist_${n}`,
    type: "order.completed",
    customerId: `c_${n}`,
    occurredAt: at,
    properties: { order_id: `o_${n}` },
    customer: {
      email: `c_${n}@example.com`,
      ...(consent && { consents: { email: { promotions: "granted" } } }),
    },
  });

describe("sendonce backfill", () => {
  // Two backfills and two workers sending forty emails at once beside the other test files:
  // on a loaded machine an SMTP call can outlast the harness's 1.5 s send timeout and its
  // lease, and be cut as in doubt. Nothing here is about calls that hang.
  const h = useHarness(JOURNEYS, {
    workers: 2,
    env: () => ({ SENDONCE_SEND_TIMEOUT_MS: "10000" }),
  });
  const cli = (args: string[]) =>
    runCli(["backfill", "--journey", "promo", ...args], h().env(), 120_000);
  const row = (stdout: string, step: string) =>
    new RegExp(`^\\s+${step} \\(\\w+\\)\\s+(\\d+)\\s+(.*)$`, "m").exec(stdout);

  it("does what its dry run said, and a rerun sends nothing", async () => {
    const db = h().schema.db;
    // History: 13 orders stored before the journey existed (10 with consent), and 2 that went
    // through it live and were sent then.
    for (let i = 0; i < 13; i++)
      await storeEvent(db, order(i, i < 10), "import", new Date(), { processed: true });
    for (const i of [100, 101])
      await h().deliver({ ...order(i, true), occurredAt: "2026-10-02T10:00:00Z" });
    for (const i of [100, 101])
      await settledOutcome(
        h(),
        actionKey({
          journeyId: "promo",
          stepId: "thanks",
          customerId: `c_${i}`,
          reference: `o_${i}`,
        }),
      );

    const dry = cli(["--since", "2026-09-01", "--until", "2026-11-01", "--dry-run"]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain("dry run: 15 events");
    expect(row(dry.stdout, "thanks")?.slice(1)).toEqual(["10", "already_sent 2, no_consent 3"]);
    expect(row(dry.stdout, "bonus")?.slice(1)).toEqual(["13", "already_sent 2"]);
    expect(await db.enrollment.count()).toBe(2);

    const real = cli(["--since", "2026-09-01", "--until", "2026-11-01"]);
    expect(real.code).toBe(0);
    expect(real.stdout).toMatch(/entry enrolled\s+13/);
    await eventually(
      async () =>
        (await db.enrollment.count({ where: { status: "active" } })) === 0 ? true : undefined,
      30_000,
    );
    const thanks = await db.action.groupBy({
      by: ["state", "reason"],
      where: { stepId: "thanks" },
      _count: true,
    });
    expect(thanks.map((g) => [g.state, g.reason, g._count]).sort()).toEqual([
      ["sent", null, 12],
      ["skipped", "no_consent", 3],
    ]);
    expect(await db.pointsEntry.count()).toBe(15);
    expect(h().sink.messages).toHaveLength(12);

    const rerun = cli(["--since", "2026-09-01", "--until", "2026-11-01"]);
    expect(rerun.stdout).not.toMatch(/entry enrolled/);
    const rerunDry = cli(["--since", "2026-09-01", "--until", "2026-11-01", "--dry-run"]);
    expect(row(rerunDry.stdout, "thanks")?.[1]).toBe("0");
    await new Promise((r) => setTimeout(r, 1_000));
    expect(h().sink.messages).toHaveLength(12);
  });

  it("sends each message once when two backfills of one range overlap, and resumes a killed one", async () => {
    const db = h().schema.db;
    for (let i = 200; i < 240; i++)
      await storeEvent(db, order(i, true, "2026-08-01T10:00:00Z"), "import", new Date(), {
        processed: true,
      });
    const range = ["--journey", "promo", "--since", "2026-07-01", "--until", "2026-09-01"];
    // One is slowed down and killed halfway; the other runs at full speed beside it.
    const slow = startProcess("backfill", h().env(), [...range, "--rate", "20/s"]);
    const line = await slow.waitFor(/backfill (bf_\w+) started/);
    const id = /backfill (bf_\w+) started/.exec(line)![1]!;
    const fast = startProcess("backfill", h().env(), range);
    await new Promise((r) => setTimeout(r, 1_200));
    await slow.kill("SIGKILL");
    expect(await fast.exited).toBe(0);
    const saved = await db.backfill.findUniqueOrThrow({ where: { id } });
    expect(saved.status).toBe("running");
    expect(saved.done).toBeGreaterThan(0);
    expect(saved.done).toBeLessThan(40);

    // A preview of the rest, or other flags, would be taken for the stored run: refused, and
    // the backfill is left as it was.
    const dry = runCli(["backfill", "--resume", id, "--dry-run"], h().env());
    expect(dry.code).toBe(1);
    expect(dry.stderr).toMatch(/--dry-run cannot resume a backfill/);
    const other = runCli(["backfill", "--resume", id, "--since", "1d"], h().env());
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/only --rate may be given again, not --since/);
    expect(await db.backfill.findUniqueOrThrow({ where: { id } })).toMatchObject({
      status: "running",
      done: saved.done,
    });

    const resumed = runCli(["backfill", "--resume", id, "--rate", "500/s"], h().env(), 120_000);
    expect(resumed.code).toBe(0);
    expect((await db.backfill.findUniqueOrThrow({ where: { id } })).status).toBe("completed");

    await eventually(
      async () =>
        (await db.enrollment.count({ where: { status: "active" } })) === 0 ? true : undefined,
      30_000,
    );
    expect(
      await db.enrollment.count({
        where: { customerId: { in: Array.from({ length: 40 }, (_, i) => `c_${200 + i}`) } },
      }),
    ).toBe(40);
    const counts = h().sink.countByMessageId();
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    expect(h().sink.messages.filter((m) => /c_2\d\d@/.test(m.to[0] ?? ""))).toHaveLength(40);
  });

  it("reports its sends' latency from the enrollment, not from events stored a month before", async () => {
    const db = h().schema.db;
    const monthAgo = new Date(Date.now() - 30 * 86_400_000);
    for (let i = 700; i < 703; i++)
      await storeEvent(db, order(i, true, "2026-08-15T10:00:00Z"), "import", monthAgo, {
        processed: true,
      });
    const range = ["--since", "2026-08-15", "--until", "2026-08-16"];
    expect(cli(range).code).toBe(0);
    await eventually(async () =>
      (await db.action.count({
        where: { customerId: { in: ["c_700", "c_701", "c_702"] }, stepId: "thanks", state: "sent" },
      })) === 3
        ? true
        : undefined,
    );
    const report = runCli(
      ["report", "--since", "1h", "--journey", "promo", "--format", "json"],
      h().env(),
    );
    const m = JSON.parse(report.stdout) as { latency: { count: number; p99: number | null } };
    expect(m.latency.count).toBeGreaterThanOrEqual(3);
    // Seconds at most, not the month the events had waited (about 2.6e9 ms before).
    expect(m.latency.p99!).toBeLessThan(60_000);
  });

  it("names what is wrong with its flags", () => {
    expect(runCli(["backfill", "--journey", "promo"], h().env()).stderr).toMatch(
      /give either --since .* or --file/,
    );
    expect(runCli(["backfill", "--journey", "nope", "--since", "30d"], h().env()).stderr).toMatch(
      /journey "nope" is not deployed here/,
    );
    expect(
      runCli(["backfill", "--journey", "promo", "--since", "last tuesday"], h().env()).stderr,
    ).toMatch(/--since last tuesday: not a date; use an ISO-8601 date/);
    expect(runCli(["backfill", "--resume", "bf_missing"], h().env()).stderr).toMatch(
      /no backfill "bf_missing"/,
    );
    expect(
      runCli(["backfill", "--journey", "promo", "--since", "1d", "--until", "2d"], h().env())
        .stderr,
    ).toMatch(/--until must be after --since/);
    for (const command of [["backfill", "--journey", "promo"], ["report"]]) {
      const future = runCli([...command, "--since", "2099-01-01"], h().env());
      expect(future.code).toBe(1);
      expect(future.stderr).toMatch(/--since 2099-01-01 is in the future/);
    }
  });

  it("dry-runs a file as the real run then does it: profiles, consents and enrollments of earlier lines, other event types", async () => {
    const db = h().schema.db;
    // c_301 is stored without consent, and the file's later order grants it.
    await storeEvent(db, order(301, false, "2026-06-01T10:00:00Z"), "import", new Date(), {
      processed: true,
    });
    const line = (
      n: number,
      o: { id?: string; type?: string; order?: string; consent?: boolean; profile?: boolean } = {},
    ) =>
      JSON.stringify({
        id: o.id ?? `file_${n}`,
        type: o.type ?? "order.completed",
        customerId: `c_${n}`,
        occurredAt: "2026-06-05T10:00:00Z",
        properties: { order_id: o.order ?? `f_${n}` },
        ...(o.profile !== false && {
          customer: {
            email: `c_${n}@example.com`,
            ...(o.consent && { consents: { email: { promotions: "granted" } } }),
          },
        }),
      });
    const lines = [
      line(301, { consent: true }),
      line(302, { consent: true }),
      line(303), // no consent
      // c_304's address and consent come on a line of another type, before its order.
      line(304, { id: "file_304_profile", type: "profile.updated", consent: true }),
      line(304, { profile: false }),
      // c_305 orders once, delivered twice under two ids: one enrollment.
      line(305, { consent: true, order: "f_305" }),
      line(305, { id: "file_305_again", order: "f_305" }),
      // A refund is not this journey's trigger.
      line(306, { type: "order.refunded", consent: true }),
    ];
    const file = join(mkdtempSync(join(tmpdir(), "sendonce-backfill-")), "orders.ndjson");
    writeFileSync(file, lines.join("\n") + "\n");
    const stored = async () => [
      await db.customer.count(),
      await db.consent.count(),
      await db.event.count(),
      await db.auditEntry.count(),
    ];
    const before = await stored();

    const dry = cli(["--file", file, "--dry-run"]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/entry enrolled\s+5/);
    expect(dry.stdout).toMatch(/already_enrolled_per_reference\s+1/);
    expect(dry.stdout).toMatch(/other_event_type\s+2/);
    const thanks = row(dry.stdout, "thanks");
    expect(thanks?.[1]).toBe("4");
    expect(thanks?.[2]?.split(", ").sort()).toEqual(["already_sent 1", "no_consent 1"]);
    expect(row(dry.stdout, "bonus")?.slice(1)).toEqual(["5", "already_sent 1"]);
    expect(await stored()).toEqual(before);

    const real = cli(["--file", file]);
    expect(real.code).toBe(0);
    expect(real.stdout).toMatch(/entry enrolled\s+5/);
    const mine = { in: ["c_301", "c_302", "c_303", "c_304", "c_305", "c_306"] };
    await eventually(
      async () =>
        (await db.enrollment.count({ where: { customerId: mine, status: "active" } })) === 0
          ? true
          : undefined,
      30_000,
    );
    const sent = await db.action.findMany({
      where: { stepId: "thanks", customerId: mine },
      select: { customerId: true, state: true, reason: true },
      orderBy: { customerId: "asc" },
    });
    expect(sent.map((a) => [a.customerId, a.state, a.reason])).toEqual([
      ["c_301", "sent", null],
      ["c_302", "sent", null],
      ["c_303", "skipped", "no_consent"],
      ["c_304", "sent", null],
      ["c_305", "sent", null],
    ]);
    expect(await db.pointsEntry.count({ where: { customerId: mine } })).toBe(5);
  });

  it("names a line whose id was stored with another payload, dry or real, and enrolls nothing for it", async () => {
    const db = h().schema.db;
    await storeEvent(db, order(400, true), "import", new Date(), { processed: true });
    const changed = {
      id: "hist_400",
      type: "order.completed",
      customerId: "c_400",
      occurredAt: "2026-10-01T10:00:00Z",
      properties: { order_id: "o_400_other" },
      customer: { email: "c_400@example.com" },
    };
    const dir = mkdtempSync(join(tmpdir(), "sendonce-backfill-conflict-"));
    const file = join(dir, "orders.ndjson");
    writeFileSync(file, `${JSON.stringify(changed)}\n{"id":"x","phone":+4915112345678}\n`);
    for (const dry of [["--dry-run"], []]) {
      const r = cli(["--file", file, ...dry]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        `${file}:1: conflict: event default/hist_400 was stored before with a different payload; this line was not stored or enrolled`,
      );
      expect(r.stderr).toContain(`${file}:2: not JSON: Unexpected token '+' (not valid JSON)`);
      expect(r.stderr).not.toContain("4915112345678");
    }
    // Neither the stored order nor the file's one was enrolled.
    expect(await db.enrollment.count({ where: { customerId: "c_400" } })).toBe(0);
  });

  it("dry-runs a file's exit events as the real run will have stored them: anywhere in the file", () => {
    const dir = mkdtempSync(join(tmpdir(), "sendonce-backfill-exits-"));
    const file = join(dir, "carts.ndjson");
    const line = (o: object) => JSON.stringify(o);
    const customer = (id: string) => ({
      email: `${id}@example.com`,
      consents: { email: { promotions: "granted" } },
    });
    writeFileSync(
      file,
      [
        line({
          id: "cart_a1",
          type: "cart.updated",
          customerId: "c_600",
          occurredAt: "2026-10-01T10:00:00Z",
          properties: { cart_id: 77 },
          customer: customer("c_600"),
        }),
        line({
          id: "cart_b1",
          type: "cart.updated",
          customerId: "c_601",
          occurredAt: "2026-10-01T10:00:00Z",
          properties: { cart_id: 78 },
          customer: customer("c_601"),
        }),
        // c_600 bought the cart an hour later, a line further down.
        line({
          id: "order_a1",
          type: "order.completed",
          customerId: "c_600",
          occurredAt: "2026-10-01T11:00:00Z",
          properties: { cart_id: 77, order_id: "o_600" },
        }),
      ].join("\n") + "\n",
    );
    const r = runCli(
      ["backfill", "--journey", "nudge", "--file", file, "--dry-run"],
      h().env(),
      120_000,
    );
    expect(r.code).toBe(0);
    const remind = row(r.stdout, "remind");
    // c_601 would get the reminder; c_600's is suppressed by the order (it had said 2 sends).
    expect(remind?.[1]).toBe("1");
    expect(remind?.[2]).toContain("exit 1");
  });

  it("dry-runs an edited journey without deploying it, and without Redis", async () => {
    const db = h().schema.db;
    const edited = journeysDir({ "promo.yaml": promo("Thank you for") });
    const versions = await db.journeyVersion.count({ where: { journeyId: "promo" } });
    const r = runCli(
      ["backfill", "--journey", "promo", "--since", "2026-07-01", "--dry-run"],
      h().env({ SENDONCE_JOURNEYS_DIR: edited, REDIS_URL: "redis://127.0.0.1:1" }),
      120_000,
    );
    expect(r.stderr).not.toMatch(/redis|error/i);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^dry run: \d+ events/m);
    // The workers still run the deployed version; the next deploy is compared with it.
    expect(await db.journeyVersion.count({ where: { journeyId: "promo" } })).toBe(versions);
  });

  it("names a missing file before it records a backfill, and leaves none running", async () => {
    const before = await h().schema.db.backfill.count();
    const r = runCli(["backfill", "--journey", "promo", "--file", "no-such.ndjson"], h().env());
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^sendonce: cannot read \/.*\/no-such\.ndjson: no such file$/m);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(await h().schema.db.backfill.count()).toBe(before);
  });
});

describe("event-to-send latency of live traffic", () => {
  const h = useHarness(JOURNEYS);

  it("counts the time an event waited to be processed", async () => {
    // Stored by the API ten minutes ago and only now processed (the workers were behind): its
    // send is ten minutes late, and the report says so.
    const db = h().schema.db;
    const tenMinutesAgo = new Date(Date.now() - 10 * 60_000);
    await storeEvent(db, order(800, true, "2026-11-01T10:00:00Z"), "api", tenMinutesAgo);
    await eventually(async () =>
      (await db.action.count({
        where: { customerId: "c_800", stepId: "thanks", state: "sent" },
      })) === 1
        ? true
        : undefined,
    );
    const report = runCli(
      ["report", "--since", "1h", "--journey", "promo", "--format", "json"],
      h().env(),
    );
    const m = JSON.parse(report.stdout) as { latency: { count: number; p50: number | null } };
    expect(m.latency.count).toBe(1);
    expect(m.latency.p50!).toBeGreaterThan(9 * 60_000);
  });
});
