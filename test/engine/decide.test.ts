// The pure core: entry policies, exits (including out-of-order ones), branches, keys.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { CustomerView, EventView } from "../../src/engine/context";
import { branchTarget, decideEntry, findExit, nextStepId } from "../../src/engine/decide";
import { actionKey } from "../../src/engine/keys";
import { compileJourney } from "../../src/journeys/compile";
import { loadJourneys } from "../../src/journeys/load";
import { ROOT } from "../support/cli";

const { journeys } = loadJourneys(`${ROOT}/journeys`);
const compiled = (id: string) => compileJourney(journeys.find((j) => j.id === id)!);

const customer: CustomerView = {
  id: "c_1",
  email: "a@example.com",
  phone: null,
  timezone: null,
  attributes: {},
};
const event = (type: string, properties: Record<string, unknown>, id = "e1"): EventView => ({
  rowId: 1n,
  id,
  source: "shop",
  type,
  customerId: "c_1",
  occurredAt: new Date("2026-11-02T10:00:00Z"),
  properties,
});

describe("entry policies", () => {
  it("per_reference renders the reference; the trigger condition refuses small carts", () => {
    const cart = compiled("cart-abandonment");
    expect(
      decideEntry(cart, event("cart.updated", { cart_id: "cart_9", total: 80 }), customer),
    ).toEqual({
      enroll: true,
      reference: "cart_9",
    });
    expect(
      decideEntry(cart, event("cart.updated", { cart_id: "cart_9", total: 5 }), customer),
    ).toMatchObject({
      enroll: false,
      rule: "trigger_condition",
    });
  });

  it("refuses the entry when its reference's template fails to render, naming why", () => {
    const dir = mkdtempSync(join(tmpdir(), "sendonce-decide-"));
    writeFileSync(
      join(dir, "runaway.yaml"),
      `id: runaway
name: Runaway
category: transactional
trigger: { event: cart.updated }
entry:
  once: per_reference
  reference: "{% for i in (1..100000000) %}x{% endfor %}"
steps:
  - id: note
    email: { subject: Hi, text: Hello }
`,
    );
    const loaded = loadJourneys(dir);
    expect(loaded.diagnostics).toEqual([]);
    const started = Date.now();
    const decision = decideEntry(
      compileJourney(loaded.journeys[0]!),
      event("cart.updated", {}),
      customer,
    );
    expect(decision).toMatchObject({ enroll: false, rule: "template_error" });
    expect((decision as { detail: string }).detail).toMatch(/limit/);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("refuses an empty reference instead of merging every cart into one", () => {
    const cart = compiled("cart-abandonment");
    expect(decideEntry(cart, event("cart.updated", { total: 80 }), customer)).toEqual({
      enroll: false,
      rule: "empty_reference",
    });
  });

  it("per_customer has one reference; every_event one per event", () => {
    expect(
      decideEntry(compiled("welcome-series"), event("customer.signed_up", {}), customer),
    ).toEqual({
      enroll: true,
      reference: "",
    });
    expect(
      decideEntry(
        compiled("win-back"),
        event("customer.lapsed", { days_since_last_order: 100 }, "e7"),
        customer,
      ),
    ).toEqual({ enroll: true, reference: "shop/e7" });
  });
});

describe("exits and steps", () => {
  it("an order for this cart exits, an order for another cart does not", () => {
    const cart = compiled("cart-abandonment");
    const enrollment = { id: 1n, reference: "cart_9" };
    const other = event("order.completed", { cart_id: "cart_8" }, "o1");
    const mine = event("order.completed", { cart_id: "cart_9" }, "o2");
    expect(findExit(cart, [other], customer, enrollment)).toBeUndefined();
    expect(findExit(cart, [other, mine], customer, enrollment)?.id).toBe("o2");
  });

  it("an order naming the cart by a number exits the series the cart's number entered", () => {
    // A shop that sends ids as JSON numbers: the reference is the rendered text "12345".
    const cart = compiled("cart-abandonment");
    const entered = decideEntry(
      cart,
      event("cart.updated", { cart_id: 12345, total: 80 }),
      customer,
    );
    expect(entered).toEqual({ enroll: true, reference: "12345" });
    const enrollment = { id: 1n, reference: "12345" };
    const bought = event("order.completed", { cart_id: 12345 }, "o3");
    const another = event("order.completed", { cart_id: 12346 }, "o4");
    expect(findExit(cart, [another, bought], customer, enrollment)?.id).toBe("o3");
    expect(findExit(cart, [another], customer, enrollment)).toBeUndefined();
  });

  it("branches on the event and falls to otherwise; exit: true ends after the step", () => {
    const cart = compiled("cart-abandonment");
    const step = cart.steps.get("big_cart")!;
    const enrollment = { id: 1n, reference: "cart_9" };
    expect(
      branchTarget(cart, step, event("cart.updated", { total: 250 }), customer, enrollment).goto,
    ).toBe("vip_sms");
    expect(
      branchTarget(cart, step, event("cart.updated", { total: 50 }), customer, enrollment).goto,
    ).toBe("points_nudge");
    expect(nextStepId(cart, "vip_sms")).toBeUndefined();
    expect(nextStepId(cart, "wait_1h")).toBe("reminder_email");
  });
});

describe("action keys", () => {
  it("depend on journey, step, customer and reference only, and never collide by concatenation", () => {
    const a = actionKey({ journeyId: "j", stepId: "s", customerId: "c1", reference: "r" });
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(actionKey({ journeyId: "j", stepId: "s", customerId: "c1", reference: "r" })).toBe(a);
    expect(actionKey({ journeyId: "j", stepId: "s", customerId: "c", reference: "1r" })).not.toBe(
      a,
    );
  });
});
