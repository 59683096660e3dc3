import { cpSync, mkdtempSync, appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadJourneys } from "../../src/journeys/load";
import { ROOT } from "../support/cli";

const JOURNEYS = join(ROOT, "journeys");

describe("the bundled example journeys", () => {
  it("are all valid, with no warnings", () => {
    const { journeys, diagnostics } = loadJourneys(JOURNEYS);
    expect(diagnostics).toEqual([]);
    expect(journeys.map((j) => j.id).sort()).toEqual([
      "cart-abandonment",
      "post-purchase-loyalty",
      "refund-compensation",
      "welcome-series",
      "win-back",
    ]);
  });

  it("parse into the shape the engine runs", () => {
    const { journeys, policies } = loadJourneys(JOURNEYS);
    const cart = journeys.find((j) => j.id === "cart-abandonment")!;
    expect(cart.entry).toEqual({
      once: "per_reference",
      reference: { source: "{{ event.properties.cart_id }}" },
      cooldownMs: 7 * 86_400_000,
    });
    expect(cart.exit).toEqual([
      {
        event: "order.completed",
        when: { source: "string(event.properties.cart_id) == enrollment.reference" },
      },
    ]);
    expect(cart.steps.map((s) => s.kind)).toEqual([
      "wait",
      "email",
      "wait",
      "branch",
      "sms",
      "points",
    ]);
    expect(cart.steps[1]).toMatchObject({
      kind: "email",
      resend: { kind: "after", ms: 30 * 86_400_000 },
    });
    expect(cart.steps[1]).toHaveProperty("html.file", "templates/cart-reminder.liquid");
    expect(cart.steps[4]).toMatchObject({ id: "vip_sms", exit: true });

    const refund = journeys.find((j) => j.id === "refund-compensation")!;
    expect(refund.steps[0]).toEqual({
      id: "reverse_order_points",
      exit: false,
      kind: "reverse_points",
      journey: "post-purchase-loyalty",
      step: "award_points",
      reason: "order_refunded",
    });

    expect(policies.caps).toEqual([
      { id: "email-daily", channel: "email", max: 2, windowMs: 86_400_000 },
      { id: "messages-weekly", channel: "any", max: 5, windowMs: 7 * 86_400_000 },
    ]);
    expect(policies.quietHours).toEqual({ sms: { startMinute: 21 * 60, endMinute: 8 * 60 } });
  });

  it("get a new version when the YAML or a template it uses changes, and only then", () => {
    const dir = mkdtempSync(join(tmpdir(), "sendonce-journeys-"));
    cpSync(JOURNEYS, dir, { recursive: true });
    const before = new Map(loadJourneys(dir).journeys.map((j) => [j.id, j.version]));
    expect(before.get("win-back")).toMatch(/^[0-9a-f]{64}$/);

    appendFileSync(
      join(dir, "templates/cart-reminder.liquid"),
      "<p>P.S. free shipping this week</p>\n",
    );
    const after = new Map(loadJourneys(dir).journeys.map((j) => [j.id, j.version]));
    expect(after.get("cart-abandonment")).not.toBe(before.get("cart-abandonment"));
    expect(after.get("win-back")).toBe(before.get("win-back"));
  });
});
