// Reconciliation finds a planted mismatch of each kind, resolves what it safely can, and the
// report counts them — with duplicate sends at 0 — as a table, JSON, /metrics and an HTML
// file whose charts draw in a real browser.
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { actionKey } from "../../src/engine/keys";
import type { RunningApi } from "../support/api";
import { API_KEY, startApi } from "../support/api";
import { runCli, runCliAsync } from "../support/cli";
import { settledAction, signup, twilioEnv, useHarness } from "../support/harness";
import { journeysDir } from "../support/journeys";
import { eventually } from "../support/workers";
import { signedRequest, useTwilioServer } from "../support/twilio";
import { handleStatusCallback } from "../../src/webhooks/twilio";
import { recordAudit } from "../../src/ledger/audit";

const JOURNEYS = journeysDir({
  "hello.yaml": `
id: hello
name: Hello
category: transactional
trigger: { event: signed_up }
steps:
  - id: hello_email
    email: { subject: "Hello", text: "Welcome" }
  - id: bonus
    points: { amount: 10, reason: welcome }
`,
  "texts.yaml": `
id: texts
name: Texts
category: transactional
trigger: { event: text.requested }
entry: { once: per_reference, reference: "{{ event.properties.ref }}" }
steps:
  - id: note
    sms: { body: "Note {{ event.properties.ref }}" }
`,
});

const CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));

describe("reconcile and report", () => {
  const twilio = useTwilioServer();
  // Workers wait long before looking an in-doubt SMS up, so reconcile gets to it first.
  const h = useHarness(JOURNEYS, {
    env: () => ({ ...twilioEnv(twilio()), SENDONCE_INDOUBT_GRACE_MS: "600000" }),
  });
  let api: RunningApi;
  beforeAll(async () => {
    api = await startApi(h());
  });
  afterAll(() => api.close());

  const key = (journeyId: string, stepId: string, customerId: string, reference = "") =>
    actionKey({ journeyId, stepId, customerId, reference });
  const text = (customerId: string, ref: string) =>
    h().deliver({
      id: `evt_${customerId}_${ref}`,
      type: "text.requested",
      customerId,
      occurredAt: "2026-11-02T10:00:00Z",
      properties: { ref },
      customer: { phone: `+4915100000${customerId.length}${ref.length}` },
    });
  const reconcile = (...args: string[]) => runCliAsync(["reconcile", ...args], h().env());

  it("finds a planted mismatch of each kind and resolves what the providers confirm", async () => {
    const db = h().schema.db;
    // Email whose answer was lost after the body went out, then reported delivered.
    h().sink.fail({ kind: "drop_after_data" }, 1);
    await h().deliver(signup("c_mail"));
    await settledAction(h(), key("hello", "hello_email", "c_mail"), "in_doubt");
    await settledAction(h(), key("hello", "bonus", "c_mail"), "sent");
    const delivered = await api.post("/v1/webhooks/email", {
      events: [
        {
          messageId: `<${key("hello", "hello_email", "c_mail")}@shop.example>`,
          event: "delivered",
        },
        { messageId: "<not-ours@elsewhere.example>", event: "bounced" },
      ],
    });
    expect(await delivered.json()).toEqual({ received: 2, matched: 1 });
    // The event settles the in-doubt email as it comes in.
    const mail = await settledAction(h(), key("hello", "hello_email", "c_mail"), "sent");
    expect(
      await db.auditEntry.findFirstOrThrow({ where: { actionKey: mail.key, kind: "sent" } }),
    ).toMatchObject({
      rule: "found_at_provider",
      detail: { resolvedBy: "delivery event delivered" },
    });
    // Another, only deferred (the provider holds it, so it was sent), whose event came in before
    // the doubt (the worker was slow to record it): reconcile settles that one.
    h().sink.fail({ kind: "drop_after_data" }, 1);
    await h().deliver(signup("c_defer"));
    await settledAction(h(), key("hello", "hello_email", "c_defer"), "in_doubt");
    await recordAudit(db, {
      kind: "delivery_status",
      at: new Date(),
      customerId: "c_defer",
      actionKey: key("hello", "hello_email", "c_defer"),
      rule: "deferred",
      detail: { messageId: `<${key("hello", "hello_email", "c_defer")}@shop.example>` },
    });
    // SMS created at the provider whose answer was lost.
    twilio().fail({ kind: "drop_after_create" }, 1);
    await text("c_sms", "a");
    await settledAction(h(), key("texts", "note", "c_sms", "a"), "in_doubt");
    // An email event naming it settles nothing: it is no email.
    await api.post("/v1/webhooks/email", {
      messageId: `<${key("texts", "note", "c_sms", "a")}@shop.example>`,
      event: "delivered",
    });
    // An email a person handed back as never sent (resolve --not-sent), not sent again yet: the
    // provider's event wins.
    h().sink.fail({ kind: "drop_after_data" }, 1);
    await h().deliver(signup("c_handed"));
    const handed = key("hello", "hello_email", "c_handed");
    await settledAction(h(), handed, "in_doubt");
    await db.action.update({
      where: { key: handed },
      data: { state: "failed_retryable", reason: "resolved_by_hand" },
    });
    await api.post("/v1/webhooks/email", {
      messageId: `<${handed}@shop.example>`,
      event: "opened",
    });
    expect((await db.action.findUniqueOrThrow({ where: { key: handed } })).state).toBe("sent");
    // SMS whose body Twilio changed, so that only its signed status callback names it.
    twilio().rewriteBodies((body) => `${body} (changed)`);
    twilio().fail({ kind: "drop_after_create" }, 1);
    await text("c_called", "c");
    await settledAction(h(), key("texts", "note", "c_called", "c"), "in_doubt");
    twilio().rewriteBodies(undefined);
    const called = twilio().messages.find(
      (m) => m.actionKey === key("texts", "note", "c_called", "c"),
    )!;
    const callback = (url: string, MessageSid: string, MessageStatus: string) =>
      handleStatusCallback(
        { db, authToken: twilio().authToken, now: () => new Date() },
        signedRequest(twilio().authToken, url, { MessageSid, MessageStatus }),
      );
    // Queued only: Twilio may yet fail it, so the callback is kept for the look-up.
    expect((await callback(called.statusCallback!, called.sid, "queued")).status).toBe(204);
    expect((await db.action.findUniqueOrThrow({ where: { key: called.actionKey! } })).state).toBe(
      "in_doubt",
    );
    // SMS whose callback says Twilio handed it on: sent there and then; not by a callback that
    // names another attempt.
    twilio().fail({ kind: "drop_after_create" }, 1);
    await text("c_handed_on", "d");
    const handedOn = key("texts", "note", "c_handed_on", "d");
    await settledAction(h(), handedOn, "in_doubt");
    const onward = twilio().messages.find((m) => m.actionKey === handedOn)!;
    const otherAttempt = onward.statusCallback!.replace(/&attempt=1$/, "&attempt=2");
    await callback(otherAttempt, onward.sid, "delivered");
    // Nor by one whose URL names no attempt (from before it was added): left to the look-up.
    await callback(onward.statusCallback!.replace(/&attempt=1$/, ""), onward.sid, "delivered");
    expect((await db.action.findUniqueOrThrow({ where: { key: handedOn } })).state).toBe(
      "in_doubt",
    );
    await callback(onward.statusCallback!, onward.sid, "sent");
    const onwardAction = await db.action.findUniqueOrThrow({ where: { key: handedOn } });
    expect([onwardAction.state, onwardAction.providerId]).toEqual(["sent", onward.sid]);
    // SMS the ledger calls sent but the provider's list lacks.
    await text("c_gone", "b");
    const gone = await settledAction(h(), key("texts", "note", "c_gone", "b"), "sent");
    twilio().messages.splice(
      twilio().messages.findIndex((m) => m.sid === gone.providerId),
      1,
    );
    // A balance that drifted from its ledger; a grant whose entry vanished; an entry no action made.
    await db.pointsBalance.update({
      where: { customerId: "c_mail" },
      data: { balance: { increment: 5 } },
    });
    await h().deliver(signup("c_lost_grant"));
    await settledAction(h(), key("hello", "bonus", "c_lost_grant"), "sent");
    await db.pointsEntry.deleteMany({ where: { customerId: "c_lost_grant" } });
    await db.pointsEntry.create({
      data: {
        customerId: "c_lost_grant",
        amount: 10,
        reason: "manual",
        actionKey: "not-an-action",
      },
    });

    const found = await reconcile("--since", "1d");
    expect(found.stderr).toBe("");
    expect(found.code).toBe(1);
    for (const kind of [
      "email_in_doubt_delivered",
      "email_event_unknown_message",
      "sms_in_doubt_found",
      "sms_sent_not_at_provider",
      "points_balance_mismatch",
      "points_grant_missing",
      "points_entry_orphan",
    ]) {
      expect(found.stdout).toContain(kind);
    }
    expect(
      (await db.action.findUniqueOrThrow({ where: { key: key("texts", "note", "c_sms", "a") } }))
        .state,
    ).toBe("in_doubt");

    const resolved = await reconcile("--since", "1d", "--resolve");
    expect(resolved.stdout).toMatch(/sms_in_doubt_found .*→ resolved: sent as SM/);
    expect(resolved.stdout).toContain(`Twilio reported ${called.sid} for it in a status callback`);
    expect(
      (await db.action.findUniqueOrThrow({ where: { key: called.actionKey! } })).providerId,
    ).toBe(called.sid);
    const sms = await db.action.findUniqueOrThrow({
      where: { key: key("texts", "note", "c_sms", "a") },
    });
    expect([sms.state, sms.providerId]).toEqual([
      "sent",
      twilio().messages.find((m) => m.actionKey === sms.key)!.sid,
    ]);
    expect(
      (await db.actionAttempt.findFirstOrThrow({ where: { actionKey: sms.key } })).outcome,
    ).toBe("sent");
    // Each email sent as the Message-ID the provider reported, dated when its call started, and
    // its attempt counted as a provider call confirmed.
    for (const customer of ["c_mail", "c_defer"]) {
      const k = key("hello", "hello_email", customer);
      const mail = await db.action.findUniqueOrThrow({ where: { key: k } });
      expect([mail.state, mail.reason, mail.providerId]).toEqual([
        "sent",
        "found_at_provider",
        `<${k}@shop.example>`,
      ]);
      expect(mail.completedAt).toEqual(mail.callStartedAt);
      const attempt = await db.actionAttempt.findFirstOrThrow({ where: { actionKey: k } });
      expect(attempt.outcome).toBe("sent");
    }
    expect(
      (await db.pointsBalance.findUniqueOrThrow({ where: { customerId: "c_mail" } })).balance,
    ).toBe(10);
    // What needs a person (a grant with no entry, an entry with no grant) stays listed.
    const points = (await reconcile("--channel", "points", "--since", "1d")).stdout;
    expect(points).not.toContain("points_balance_mismatch");
    expect(points).toContain("points_grant_missing");
  });

  it("reports duplicate sends (0), mismatches and latency as JSON, and on /metrics", async () => {
    const json = runCli(["report", "--since", "1d", "--format", "json"], h().env());
    expect(json.code).toBe(0);
    const m = JSON.parse(json.stdout) as {
      duplicateSends: unknown[];
      reconciliationMismatches: Record<string, number>;
      latency: { count: number; p50: number | null };
      actions: { stepId: string; state: string }[];
    };
    expect(m.duplicateSends).toEqual([]);
    expect(m.reconciliationMismatches.sms_in_doubt_found).toBeGreaterThanOrEqual(1);
    // Listed by three reconcile runs, counted once; the foreign Message-ID is counted too.
    expect(m.reconciliationMismatches.points_grant_missing).toBe(1);
    expect(m.reconciliationMismatches.email_event_unknown_message).toBe(1);

    expect(m.latency.count).toBeGreaterThan(0);
    expect(runCli(["report", "--since", "1d"], h().env()).stdout).toMatch(
      /keys sent more than once\s+0/,
    );
    // A journey filter narrows the events to the types it enters on, the actions to its own and
    // the mismatches to those of its actions. A redelivered SMS request is not hello's.
    await text("c_sms", "a");
    await eventually(() =>
      h().schema.db.eventDuplicate.findFirst({ where: { eventId: "evt_c_sms_a" } }),
    );
    const report = (...args: string[]) => {
      const out = runCli(["report", "--since", "1d", "--format", "json", ...args], h().env());
      return JSON.parse(out.stdout) as {
        eventTypes: string[] | null;
        events: { received: number; duplicates: number }[];
        reconciliationMismatches: Record<string, number>;
      };
    };
    const [all, hello] = [report(), report("--journey", "hello")];
    const sum = (m: typeof all, k: "received" | "duplicates") =>
      m.events.reduce((s, e) => s + e[k], 0);
    const signups = await h().schema.db.event.count({ where: { type: "signed_up" } });
    expect([all.eventTypes, hello.eventTypes]).toEqual([null, ["signed_up"]]);
    expect([sum(hello, "received"), sum(hello, "duplicates")]).toEqual([signups, 0]);
    expect(sum(all, "received")).toBeGreaterThan(signups);
    expect(sum(all, "duplicates")).toBe(1);
    expect(Object.keys(hello.reconciliationMismatches).sort()).toEqual([
      "email_in_doubt_delivered",
      "points_grant_missing",
    ]);
    const table = runCli(["report", "--since", "1d", "--journey", "hello"], h().env()).stdout;
    expect(table).toContain("events by source (signed_up)");
    expect(table).toContain("idempotent replays (all journeys)");
    expect(table).not.toMatch(/^\s+texts\./m);
    // A journey this database never ran is a typo, not a report of nothing.
    for (const args of [["report"], ["explain", "--customer", "c_mail"]]) {
      const typo = runCli([...args, "--journey", "helo"], h().env());
      expect(typo.code).toBe(1);
      expect(typo.stderr).toContain('unknown journey "helo": this database has run hello');
    }

    const metrics = await (await fetch(`${api.url}/metrics`)).text();
    expect(metrics).toMatch(/^sendonce_duplicate_sends 0$/m);
    expect(metrics).toMatch(
      /^sendonce_actions\{journey="hello",step="hello_email",channel="email",state="sent"\} \d+$/m,
    );
    expect(metrics).toMatch(
      /^sendonce_reconciliation_mismatches\{kind="points_balance_mismatch"\} \d+$/m,
    );
    expect(API_KEY).not.toBe("");
    // Nine CLI processes, each a Node start-up: on a busy machine well over the default 30 s.
  }, 120_000);

  it.runIf(CHROMIUM)(
    "writes an HTML report whose charts draw in headless Chromium, offline",
    async () => {
      const out = join(mkdtempSync(join(tmpdir(), "sendonce-report-")), "report.html");
      const written = runCli(
        ["report", "--since", "1d", "--format", "html", "--out", out],
        h().env(),
      );
      expect(written.stderr).toBe("");
      expect(written.code).toBe(0);
      expect(readFileSync(out, "utf8")).not.toMatch(/<script[^>]+src=/);
      const browser = await chromium.launch({
        executablePath: CHROMIUM!,
        args: [
          "--no-sandbox",
          "--disable-gpu",
          "--disable-background-networking",
          "--no-first-run",
        ],
      });
      try {
        const page = await browser.newPage();
        const requests: string[] = [];
        page.on("request", (r) => requests.push(r.url()));
        await page.goto(`file://${out}`);
        type Drawn = { canvas: { width: number }; data: { datasets: { data: number[] }[] } };
        const charts = await page.evaluate(() =>
          (globalThis as unknown as { sendonceCharts: Drawn[] }).sendonceCharts.map((c) => ({
            width: c.canvas.width,
            points: c.data.datasets.reduce((s, d) => s + d.data.reduce((x, y) => x + y, 0), 0),
          })),
        );
        expect(charts).toHaveLength(3);
        for (const c of charts) expect(c.width).toBeGreaterThan(0);
        expect(charts.every((c) => c.points > 0)).toBe(true);
        expect(await page.textContent("#kpi-duplicate-sends b")).toBe("0");
        expect(requests.filter((u) => !u.startsWith("file://"))).toEqual([]);
      } finally {
        await browser.close();
      }
    },
  );

  it("does not settle an in-doubt SMS with another message to the same number", async () => {
    // The first text never reaches Twilio; a second one, with another body, goes to the same
    // number right after it.
    twilio().fail({ kind: "drop" }, 1);
    await text("c_pair", "x");
    const lost = key("texts", "note", "c_pair", "x");
    await settledAction(h(), lost, "in_doubt");
    await text("c_pair", "y");
    await settledAction(h(), key("texts", "note", "c_pair", "y"), "sent");
    const out = await reconcile("--channel", "sms", "--since", "1d", "--resolve");
    expect(out.stderr).toBe("");
    const lines = out.stdout.split("\n").filter((l) => l.includes(lost));
    expect(lines.some((l) => l.includes("sms_in_doubt_found"))).toBe(false);
    const action = await h().schema.db.action.findUniqueOrThrow({ where: { key: lost } });
    expect([action.state, action.providerId]).toEqual(["in_doubt", null]);
    // The report counts what is in doubt now, whenever claimed: a window that starts after
    // the claim still shows it (it had shown 0).
    const inDoubt = await h().schema.db.action.count({ where: { state: "in_doubt" } });
    expect(inDoubt).toBeGreaterThan(0);
    const sinceNow = runCli(
      ["report", "--since", new Date().toISOString(), "--format", "json"],
      h().env(),
    );
    expect((JSON.parse(sinceNow.stdout) as { inDoubt: number }).inDoubt).toBe(inDoubt);
  });

  it("leaves an in-doubt SMS with a message Twilio changed to a person, naming the message", async () => {
    // Twilio's Link Shortening rewrote the body, the answer was lost, and no callback came.
    twilio().rewriteBodies((body) => `${body} https://twil.io/Qz1`);
    twilio().fail({ kind: "drop_after_create" }, 1);
    try {
      await text("c_link", "l");
      const k = key("texts", "note", "c_link", "l");
      await settledAction(h(), k, "in_doubt");
      // Before its look-up is due, the workers' look-up decides: nothing to report yet.
      const early = await reconcile("--channel", "sms", "--since", "1d");
      expect(early.stdout).not.toContain(k);
      // Past the grace period (the workers' look-up overdue), it is for a person.
      await h().schema.db.action.update({
        where: { key: k },
        data: { updatedAt: new Date(Date.now() - 601_000) },
      });
      const out = await reconcile("--channel", "sms", "--since", "1d", "--resolve");
      expect(out.stderr).toBe("");
      const sid = twilio().messages.find((m) => m.actionKey === k)!.sid;
      const line = out.stdout.split("\n").find((l) => l.includes(k));
      expect(line).toContain("sms_in_doubt_unmatched");
      expect(line).toContain(sid);
      expect(line).not.toContain("resolved");
      expect((await h().schema.db.action.findUniqueOrThrow({ where: { key: k } })).state).toBe(
        "in_doubt",
      );
      expect(twilio().countByKey().get(k)).toBe(1);
    } finally {
      twilio().rewriteBodies(undefined);
    }
  });

  it("lists a delivery event for a message not ours without failing the run", async () => {
    const posted = await api.post("/v1/webhooks/email", {
      messageId: "<someone-else@elsewhere.example>",
      event: "delivered",
    });
    expect(await posted.json()).toEqual({ received: 1, matched: 0 });
    const out = await reconcile("--channel", "email", "--since", "1d");
    expect(out.stdout).toContain("email_event_unknown_message");
    expect(out.code).toBe(0);
  });

  it("names the field of a malformed delivery event, alone or in a batch", async () => {
    const problems = async (body: object) => {
      const r = await api.post("/v1/webhooks/email", body);
      expect(r.status).toBe(400);
      return ((await r.json()) as { errors: { field: string }[] }).errors.map((e) => e.field);
    };
    expect(await problems({ messageId: "<m@x>", event: "sent" })).toEqual(["event"]);
    expect(await problems({ messageId: "<m@x>", event: "delivered", colour: 1 })).toEqual([
      "colour",
    ]);
    expect(
      await problems({ events: [{ messageId: "<m@x>", event: "delivered" }, { event: "opened" }] }),
    ).toEqual(["events[1].messageId"]);
    const ahead = new Date(Date.now() + 3 * 3_600_000).toISOString();
    expect(await problems({ messageId: "<m@x>", event: "delivered", at: ahead })).toEqual(["at"]);
  });
});
