import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { formatDiagnostic } from "../../src/journeys/diagnostics";
import { loadJourneys } from "../../src/journeys/load";
import { compileTemplate } from "../../src/journeys/templates";

/** Writes files into a fresh journeys directory and validates it. */
function validate(files: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), "sendonce-validate-"));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  const result = loadJourneys(dir);
  const lines = result.diagnostics.map((d) => formatDiagnostic(d).slice(dir.length + 1));
  return { ...result, lines };
}

const HEADER = `id: j
name: J
category: transactional
trigger:
  event: signed_up
steps:
`;

describe("sendonce validate", () => {
  it("names a misspelt step kind with a suggestion, at the key", () => {
    const { lines } = validate({
      "j.yaml": HEADER + "  - id: hello\n    emial: { subject: Hi, text: Hello }\n",
    });
    expect(lines).toEqual([
      'j.yaml:8:5: error: step "hello": unknown step kind "emial" — did you mean "email"? (steps are wait, email, sms, points, branch, or exit: true)',
    ]);
  });

  it("finds a goto to a missing step, duplicate ids, and steps nothing leads to", () => {
    const { lines } = validate({
      "j.yaml":
        HEADER +
        `  - id: pick
    branch:
      - when: "event.properties.total > 10"
        goto: big
      - otherwise: smal
  - id: small
    exit: true
  - id: small
    wait: 1h
`,
    });
    expect(lines).toEqual([
      'j.yaml:10:15: error: goto "big": no step has this id',
      'j.yaml:11:20: error: goto "smal": no step has this id — did you mean "small"?',
      'j.yaml:14:9: error: duplicate step id "small" (first used on line 12): step ids must be unique, they are part of every action key',
    ]);
    // Once ids and targets are right, the graph is checked as a whole.
    const fixed = validate({
      "j.yaml":
        HEADER +
        `  - id: pick
    branch:
      - when: "event.properties.total > 10"
        goto: big
      - otherwise: small
  - id: small
    exit: true
  - id: orphan
    wait: 1h
  - id: big
    points: { amount: 10, reason: big_order }
`,
    });
    expect(fixed.lines).toEqual([
      'j.yaml:14:9: error: step "orphan" can never run: no step leads to it (the step before it exits or branches away, and no goto names it)',
    ]);
  });

  it("finds a journey id used twice, also when one of the files has other errors", () => {
    const ok = "  - id: hello\n    email: { subject: Hi, text: Hello }\n";
    const { lines, journeys } = validate({
      "a.yaml": HEADER + "  - id: hello\n    email: { subject: Hi, text: Hello, bogus: 1 }\n",
      "b.yaml": "# the same id\n" + HEADER + ok,
      "c.yaml": HEADER.replace("id: j", "id: k") + ok,
    });
    expect(lines).toEqual([
      'a.yaml:8:40: error: unknown field "bogus" in steps[0].email',
      expect.stringMatching(
        /^b\.yaml:2:5: error: journey id "j" is already used by .*a\.yaml: ids must be unique/,
      ),
    ]);
    expect(journeys.map((j) => j.id)).toEqual(["k"]);
  });

  it("says what is wrong inside a field that takes several forms", () => {
    const { lines } = validate({
      "j.yaml":
        HEADER +
        "  - id: hello\n    email: { subject: Hi, text: Hello }\n    resend: { after: 30x }\n",
    });
    expect(lines).toEqual([
      'j.yaml:9:13: error: steps[0].resend: after: bad duration "30x": use a number and a unit (ms, s, m, h, d, w), e.g. "90s", "1h30m" or "7d"',
    ]);
  });

  it("rejects a loop with no wait, and accepts the same loop with one", () => {
    const loop = (wait: string) =>
      HEADER +
      `  - id: nudge
    sms: { body: "Come back" }
${wait}  - id: again
    branch:
      - when: "customer.attributes.active == false"
        goto: nudge
`;
    expect(validate({ "j.yaml": loop("") }).lines).toEqual([
      'j.yaml:7:9: error: steps "nudge" → "again" form a loop with no wait step: a customer would go round it without pause; add a wait inside the loop',
    ]);
    expect(validate({ "j.yaml": loop("  - id: pause\n    wait: 7d\n") }).lines).toEqual([]);
  });

  it("places a bad duration, a condition error and a Liquid error at their character", () => {
    const { lines } = validate({
      "j.yaml": `id: j
name: J
consent: promotions
trigger:
  event: cart.updated
  when: "event.properties.total >> 20"
entry:
  once: per_reference
  reference: "{{ event.properties.cart_id }}"
  cooldown: 7 days
steps:
  - id: remind
    email:
      subject: "Hi {{ customer.attributes.name | nope }}"
      html: |
        <p>Your cart</p>
        <p>{% for item in event.properties.items %}{{ item.name }}</p>
`,
    });
    expect(lines).toEqual([
      "j.yaml:6:34: error: condition: Unexpected token: GT",
      'j.yaml:10:13: error: entry.cooldown: bad duration "7 days": use a number and a unit (ms, s, m, h, d, w), e.g. "90s", "1h30m" or "7d"',
      "j.yaml:14:20: error: Liquid: undefined filter: nope",
      "j.yaml:17:12: error: Liquid: tag {% for item in event.properties.items %} not closed",
    ]);
  });

  it("reports a Liquid error in a template file at that file's line", () => {
    const { lines } = validate({
      "j.yaml":
        HEADER + "  - id: hello\n    email: { subject: Hi, template: templates/hello.liquid }\n",
      "templates/hello.liquid":
        "<p>Hello</p>\n<p>{% if customer.attributes.vip %}VIP{% endiff %}</p>\n",
    });
    expect(lines).toEqual(['templates/hello.liquid:2:39: error: Liquid: tag "endiff" not found']);
    const missing = validate({
      "j.yaml":
        HEADER + "  - id: hello\n    email: { subject: Hi, template: templates/nope.liquid }\n",
    });
    expect(missing.lines).toEqual([
      'j.yaml:8:37: error: template file "templates/nope.liquid" not found (paths are relative to the journeys directory)',
    ]);
  });

  it("refuses a duration too long to be a date: a typo, not a wait", () => {
    const { lines } = validate({
      "j.yaml": HEADER + "  - id: pause\n    wait: 99999999999w\n  - id: done\n    exit: true\n",
    });
    expect(lines).toEqual([
      'j.yaml:8:11: error: steps[0].wait: bad duration "99999999999w": at most ten years (3650d)',
    ]);
  });

  it("refuses the Liquid tags that read files, at the tag", () => {
    const { lines } = validate({
      "j.yaml":
        HEADER +
        `  - id: hello
    email:
      subject: "Hi {% render 'name' %}"
      text: |
        Hello
        {% include '.env' %}
`,
    });
    expect(lines).toEqual([
      "j.yaml:9:20: error: Liquid: {% render %} is not supported: templates cannot read files; put the text in the template, or use template: FILE for the whole body",
      "j.yaml:12:9: error: Liquid: {% include %} is not supported: templates cannot read files; put the text in the template, or use template: FILE for the whole body",
    ]);
  });

  it("renders a stored version's file tag as a template error, reading nothing", () => {
    // A version deployed before the tags were refused: enrollments keep it, and it compiles.
    const render = compileTemplate("Hello {% include 'package.json' %}");
    expect(() => render({})).toThrow(/\{% include %\} is not supported/);
  });

  it("rejects variables from unknown roots in templates and conditions", () => {
    const { lines } = validate({
      "j.yaml": `id: j
name: J
category: transactional
trigger: { event: x, when: "order.total > 1" }
steps:
  - id: s
    sms: { body: "Code {{ coupon.code }}" }
`,
    });
    expect(lines).toEqual([
      'j.yaml:4:29: error: condition: unknown variable "order": conditions can read event, customer, enrollment',
      'j.yaml:7:27: error: unknown variable "coupon": templates can read event, customer, enrollment, journey, points, unsubscribe_url',
    ]);
  });

  it("refuses a marketing send without a consent topic: no STOP or unsubscribe would stop it", () => {
    const { lines, journeys } = validate({
      "j.yaml": `id: promo
name: Promo
trigger: { event: x }
steps:
  - id: blast
    sms: { body: "Sale!" }
`,
    });
    expect(lines).toEqual([
      'j.yaml:6:5: error: marketing sms step "blast" has no consent topic: set "consent:" on the journey (a marketing send goes only to customers who granted its topic, and STOP and unsubscribe links revoke it), or "category: transactional" for a message the customer asked for',
    ]);
    expect(journeys).toHaveLength(0);
  });

  it("refuses resend: on_reopt_in in a journey without a consent topic, which would never resend", () => {
    const { lines } = validate({
      "j.yaml":
        HEADER +
        `  - id: receipt
    email: { subject: Receipt, text: Thanks }
    resend: on_reopt_in
`,
    });
    expect(lines).toEqual([
      'j.yaml:9:13: error: step "receipt": resend: on_reopt_in waits for a fresh grant of the journey\'s consent topic, and this journey has none: it would never send the step again; set "consent:" or use another resend policy',
    ]);
  });

  it("names unknown and missing fields, and wrong values", () => {
    const { lines } = validate({
      "j.yaml": `id: j
name: J
categroy: marketing
consent: promotions
trigger: { evnt: x }
entry: { once: per_reference }
steps:
  - email: { subject: Hi, text: Hello }
    resend: sometimes
  - id: p
    points: { amount: 1.5, reason: x }
`,
    });
    expect(lines).toEqual([
      'j.yaml:3:1: error: unknown field "categroy" — did you mean "category"?',
      'j.yaml:5:10: error: trigger is missing "event"',
      'j.yaml:5:12: error: unknown field "evnt" in trigger — did you mean "event"?',
      'j.yaml:8:5: error: step 1 has no "id": step ids are part of every action key, so give each step a stable name',
      'j.yaml:9:13: error: steps[0].resend: "sometimes" is not allowed here',
      "j.yaml:11:23: error: steps[1].points.amount: must be an int, not number 1.5",
    ]);
  });

  it("reports YAML syntax errors and checks policies.yaml", () => {
    const { lines } = validate({
      "j.yaml": "id: j\nname: [unclosed\n",
      "policies.yaml": `caps:
  - channel: fax
    max: 2
    per: 1d
quiet_hours:
  sms: { start: "9pm", end: "08:00" }
default_timezone: Mars/Olympus
`,
    });
    expect(lines).toEqual([
      expect.stringMatching(/^j\.yaml:3:1: error: YAML: /),
      'policies.yaml:2:14: error: caps[0].channel: must be one of "email", "sms", "any", not "fax"',
      'policies.yaml:6:17: error: quiet_hours.sms.start: use 24-hour "HH:MM", e.g. "21:00"',
      'policies.yaml:7:19: error: default_timezone: not an IANA timezone, e.g. "Europe/Berlin" or "UTC"',
    ]);
  });

  it("resolves a points reversal without a journey to its own journey", () => {
    const { lines, journeys } = validate({
      "a.yaml":
        HEADER +
        "  - id: grant\n    points: { amount: 100, reason: order }\n" +
        "  - id: undo\n    points: { reverse: { step: grant }, reason: refund }\n",
    });
    expect(lines).toEqual([]);
    expect(journeys[0]!.steps[1]).toMatchObject({
      kind: "reverse_points",
      journey: "j",
      step: "grant",
    });
  });

  it("checks that a points reversal names a granting points step", () => {
    const { lines } = validate({
      "a.yaml": HEADER + "  - id: grant\n    points: { amount: 100, reason: order }\n",
      "b.yaml":
        HEADER.replace("id: j", "id: k") +
        "  - id: undo\n    points: { reverse: { journey: j, step: grnt }, reason: refund }\n",
    });
    expect(lines).toEqual([
      'b.yaml:8:44: error: step "undo" reverses "j.grnt", which is not a points step that grants points — did you mean "grant"?',
    ]);
  });
});
