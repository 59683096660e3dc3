import { describe, expect, it } from "vitest";
import { formatDuration, parseDuration } from "../../src/journeys/duration";
import { checkCondition, compileCondition } from "../../src/journeys/expressions";
import { checkTemplate, compileTemplate } from "../../src/journeys/templates";

describe("durations", () => {
  it.each([
    ["90s", 90_000],
    ["1h", 3_600_000],
    ["1h30m", 5_400_000],
    ["7d", 604_800_000],
    ["2w", 1_209_600_000],
    ["250ms", 250],
  ])("%s is %i ms", (text, ms) => {
    expect(parseDuration(text)).toEqual({ text, ms });
  });

  it.each(["", "5", "5x", "1d 2h", "30m1h", "0s", "-1d", "1.5h"])(
    "%j is rejected with a hint",
    (text) => {
      expect(parseDuration(text)).toHaveProperty("error", expect.stringMatching(/duration/));
    },
  );

  it("formats back to the compact form", () => {
    expect(formatDuration(5_400_000)).toBe("1h30m");
    expect(formatDuration(604_800_000)).toBe("7d");
  });
});

describe("conditions", () => {
  it("compare event properties, profile fields and the enrollment", () => {
    const big = compileCondition(
      "event.properties.total > 200 && customer.attributes.tier == 'gold'",
    );
    expect(
      big({ event: { properties: { total: 250 } }, customer: { attributes: { tier: "gold" } } }),
    ).toEqual({ value: true });
    expect(
      big({ event: { properties: { total: 20 } }, customer: { attributes: { tier: "gold" } } }),
    ).toEqual({ value: false });
    const sameCart = compileCondition("event.properties.cart_id == enrollment.reference");
    expect(
      sameCart({ event: { properties: { cart_id: "c_1" } }, enrollment: { reference: "c_1" } })
        .value,
    ).toBe(true);
  });

  it("do integer arithmetic on JSON numbers and mix them with decimals", () => {
    expect(
      compileCondition("event.properties.count + 1 > 2")({ event: { properties: { count: 2 } } })
        .value,
    ).toBe(true);
    expect(
      compileCondition("event.properties.total > 20.5")({ event: { properties: { total: 21 } } })
        .value,
    ).toBe(true);
  });

  it("are false, with the reason, when a field is missing", () => {
    const result = compileCondition("event.properties.total > 20")({ event: { properties: {} } });
    expect(result.value).toBe(false);
    expect(result.error).toMatch(/total/);
    expect(
      compileCondition("has(event.properties.total)")({ event: { properties: {} } }).value,
    ).toBe(false);
  });

  it("reject unknown variables, syntax errors and non-boolean results before deployment", () => {
    expect(checkCondition("order.total > 1")?.message).toMatch(/unknown variable "order"/);
    expect(checkCondition("event.total >")).toMatchObject({ offset: 13 });
    expect(checkCondition("event.properties.vip")).toBeUndefined();
    expect(checkCondition("event.properties.total + 1")?.message).toBe(
      "condition must be true or false, but this one gives an int",
    );
    expect(checkCondition("1 + 2")?.message).toMatch(/true or false/);
  });

  it("cannot reach JavaScript", () => {
    expect(checkCondition("process.exit(1)")?.message).toMatch(/unknown variable "process"/);
    expect(checkCondition("event.constructor.constructor('return 1')()")).toBeDefined();
  });
});

describe("templates", () => {
  it("render Liquid with the profile and event", () => {
    const render = compileTemplate(
      "Hi {{ customer.attributes.first_name | default: 'there' }}, {{ event.properties.total }} EUR",
    );
    expect(
      render({
        customer: { attributes: { first_name: "Ana" } },
        event: { properties: { total: 120 } },
      }),
    ).toBe("Hi Ana, 120 EUR");
    expect(render({ customer: { attributes: {} }, event: { properties: { total: 5 } } })).toBe(
      "Hi there, 5 EUR",
    );
  });

  it("report syntax errors, unknown filters and unknown variables at their line", () => {
    expect(checkTemplate("a\n{% if x %}\nb")).toEqual([
      { line: 2, column: 1, message: "Liquid: tag {% if x %} not closed" },
    ]);
    expect(checkTemplate("a\n  {{ customer.email | shout }}")).toEqual([
      { line: 2, column: 3, message: "Liquid: undefined filter: shout" },
    ]);
    expect(checkTemplate("{% assign n = 1 %}{{ n }}\n{{ shop.url }}")).toEqual([
      {
        line: 2,
        column: 4,
        message:
          'unknown variable "shop": templates can read event, customer, enrollment, journey, points, unsubscribe_url',
      },
    ]);
  });
});
