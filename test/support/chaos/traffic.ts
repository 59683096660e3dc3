// The chaos run's journeys and traffic: customers with a spread of profiles (so that consent
// and missing addresses skip some actions), their events, the redeliveries that make the
// duplicates, and the ledger the run must end with — computed from the same definitions. A
// marketing offer after each order is capped per customer: which orders get it depends on the
// order of processing, so its expectation is the cap itself (verify.ts).
import { actionKey } from "../../../src/engine/keys";

export const SIGNUP_POINTS = 50;
export const ORDER_POINTS = 100;
/** Offer emails per customer: the promo journey's cap. */
export const OFFER_CAP = 2;

/** Journeys of the run, by file name: email, SMS and points, marketing and transactional. */
export const CHAOS_JOURNEYS: Record<string, string> = {
  "signup.yaml": `
id: signup
name: Signup bonus
category: marketing
consent: promotions
trigger: { event: signed_up }
entry: { once: per_customer }
steps:
  - id: welcome_email
    email:
      subject: "Welcome {{ customer.attributes.name }}"
      html: "<p>Welcome aboard, here is your unsubscribe link: {{ unsubscribe_url }}</p>"
      text: "Welcome aboard"
  - id: signup_points
    points: { amount: ${SIGNUP_POINTS}, reason: signup_bonus }
  - id: welcome_sms
    sms: { body: "Welcome aboard, {{ customer.attributes.name }}" }
`,
  "purchase.yaml": `
id: purchase
name: Points and receipt per order
category: transactional
trigger: { event: order.completed }
entry: { once: per_reference, reference: "{{ event.properties.order_id }}" }
steps:
  - id: order_points
    points: { amount: ${ORDER_POINTS}, reason: order_reward }
  - id: receipt_email
    email:
      subject: "Receipt for {{ event.properties.order_id }}"
      text: "Thanks for order {{ event.properties.order_id }}"
  - id: receipt_sms
    sms: { body: "Order {{ event.properties.order_id }} confirmed" }
`,
  "promo.yaml": `
id: promo
name: An offer after each order, at most ${OFFER_CAP} a day
category: marketing
consent: promotions
trigger: { event: order.completed }
entry: { once: per_reference, reference: "{{ event.properties.order_id }}" }
caps:
  - channel: email
    max: ${OFFER_CAP}
    per: 1d
steps:
  - id: offer_email
    email:
      subject: "10 % off your next order, {{ customer.attributes.name }}"
      text: "Thanks for order {{ event.properties.order_id }}"
`,
};

/**
 * Marketing SMS are held back in quiet hours (DESIGN §4): a window placed over part of the run,
 * in the policies' default timezone (the run's customers have none of their own). Kolkata is
 * UTC+05:30 all year, so the window's local times are computed here by its fixed offset, not by
 * the time zone database the engine uses.
 */
export const QUIET_TIMEZONE = "Asia/Kolkata";
const QUIET_OFFSET_MINUTES = 330;

export interface QuietWindow {
  /** Quiet from this minute … */
  from: Date;
  /** … until this one: a send decided in between is delayed to it. */
  until: Date;
}

/** From the minute `now` is in, to the first whole minute at least `lastsMs` after `now`. */
export function quietWindow(now: number, lastsMs: number): QuietWindow {
  const minute = 60_000;
  return {
    from: new Date(Math.floor(now / minute) * minute),
    until: new Date(Math.ceil((now + lastsMs) / minute) * minute),
  };
}

/** The window in the default timezone's wall-clock time, `HH:MM`. */
export function quietLocal(at: Date): string {
  const minutes = (Math.floor(at.getTime() / 60_000) + QUIET_OFFSET_MINUTES) % 1_440;
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${pad(Math.floor(minutes / 60))}:${pad(minutes % 60)}`;
}

/** policies.yaml for a run with quiet hours for SMS. */
export function quietPolicies(w: QuietWindow): string {
  return `quiet_hours:\n  sms: { start: "${quietLocal(w.from)}", end: "${quietLocal(w.until)}" }\ndefault_timezone: ${QUIET_TIMEZONE}\n`;
}

/** Whether quiet hours hold this action back: marketing SMS (transactional ones are exempt). */
export function heldInQuietHours(e: Pick<ExpectedAction, "journeyId" | "channel">): boolean {
  return e.channel === "sms" && MARKETING.has(e.journeyId as JourneyId);
}

/**
 * What a channel step is expected to do for a customer, decided by the profile alone; a capped
 * step allowed by the profile may still be skipped for its cap, once the cap is full.
 */
export type Expectation = { allowed: true; cap?: number } | { allowed: false; reason: string };

export interface ExpectedAction {
  key: string;
  journeyId: string;
  stepId: string;
  customerId: string;
  channel: "email" | "sms" | "points";
  /** Points granted when the action is done; 0 for sends. */
  points: number;
  expect: Expectation;
}

export interface ChaosCustomer {
  id: string;
  email?: string;
  phone?: string;
  emailConsent?: "granted" | "revoked";
  smsConsent?: "granted" | "revoked";
}

export interface ChaosEvent {
  id: string;
  type: "signed_up" | "order.completed";
  customerId: string;
  occurredAt: string;
  properties: Record<string, unknown>;
  customer: Record<string, unknown>;
}

/** One POST of the run: the events of one request, and when to send it (ms from the start). */
export interface Delivery {
  atMs: number;
  events: ChaosEvent[];
  /**
   * Posted once more after its answer, under the same Idempotency-Key, as a client that lost
   * the answer would: the API must replay the first answer.
   */
  repeat: boolean;
}

export interface Traffic {
  customers: ChaosCustomer[];
  events: ChaosEvent[];
  deliveries: Delivery[];
  /** Redeliveries of an id already in an earlier or concurrent request. */
  duplicates: number;
  expected: ExpectedAction[];
}

/** A small seeded PRNG (mulberry32), so a run can be repeated with its seed. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function pick<T>(rand: () => number, weighted: [T, number][]): T {
  let r = rand() * weighted.reduce((s, [, w]) => s + w, 0);
  for (const [value, w] of weighted) {
    r -= w;
    if (r < 0) return value;
  }
  return weighted[weighted.length - 1]![0];
}

function makeCustomer(rand: () => number, i: number): ChaosCustomer {
  const id = `c_${i}`;
  const c: ChaosCustomer = { id };
  if (rand() < 0.95) c.email = `${id}@chaos.example`;
  if (rand() < 0.7) c.phone = `+1555${String(1_000_000 + i).slice(-7)}`;
  const emailConsent = pick<ChaosCustomer["emailConsent"]>(rand, [
    ["granted", 70],
    ["revoked", 15],
    [undefined, 15],
  ]);
  if (emailConsent) c.emailConsent = emailConsent;
  const smsConsent = pick<ChaosCustomer["smsConsent"]>(rand, [
    ["granted", 65],
    ["revoked", 20],
    [undefined, 15],
  ]);
  if (smsConsent) c.smsConsent = smsConsent;
  return c;
}

/** The traits every event of the customer carries: the same ones, so order does not matter. */
function traits(c: ChaosCustomer): Record<string, unknown> {
  const consents: Record<string, Record<string, string>> = {};
  if (c.emailConsent) consents.email = { promotions: c.emailConsent };
  if (c.smsConsent) consents.sms = { promotions: c.smsConsent };
  return {
    ...(c.email && { email: c.email }),
    ...(c.phone && { phone: c.phone }),
    attributes: { name: c.id },
    ...(Object.keys(consents).length > 0 && { consents }),
  };
}

/** DESIGN §4, for this run's journeys: the address first, then a marketing topic's consent. */
function expectation(
  c: ChaosCustomer,
  channel: "email" | "sms" | "points",
  marketing: boolean,
): Expectation {
  if (channel === "points") return { allowed: true };
  const address = channel === "email" ? c.email : c.phone;
  if (!address) return { allowed: false, reason: "no_address" };
  const consent = channel === "email" ? c.emailConsent : c.smsConsent;
  if (marketing && consent !== "granted") return { allowed: false, reason: "no_consent" };
  return { allowed: true };
}

type JourneyId = "signup" | "purchase" | "promo";
const MARKETING = new Set<JourneyId>(["signup", "promo"]);

/** Each journey's steps: id, channel, points granted. */
const STEPS: Record<JourneyId, readonly (readonly [string, ExpectedAction["channel"], number])[]> =
  {
    signup: [
      ["welcome_email", "email", 0],
      ["signup_points", "points", SIGNUP_POINTS],
      ["welcome_sms", "sms", 0],
    ],
    purchase: [
      ["order_points", "points", ORDER_POINTS],
      ["receipt_email", "email", 0],
      ["receipt_sms", "sms", 0],
    ],
    promo: [["offer_email", "email", 0]],
  };

/** The actions the events must lead to: every step of every enrollment. */
export function expectedActions(
  customers: Map<string, ChaosCustomer>,
  events: ChaosEvent[],
): ExpectedAction[] {
  const out: ExpectedAction[] = [];
  const add = (journeyId: JourneyId, c: ChaosCustomer, reference: string) => {
    for (const [stepId, channel, points] of STEPS[journeyId]) {
      const expect = expectation(c, channel, MARKETING.has(journeyId));
      out.push({
        key: actionKey({ journeyId, stepId, customerId: c.id, reference }),
        journeyId,
        stepId,
        customerId: c.id,
        channel,
        points,
        expect:
          journeyId === "promo" && expect.allowed ? { allowed: true, cap: OFFER_CAP } : expect,
      });
    }
  };
  const signedUp = new Set<string>();
  for (const e of events) {
    const c = customers.get(e.customerId)!;
    if (e.type === "signed_up") {
      // Entry is once per customer, and each customer signs up once anyway.
      if (!signedUp.has(c.id)) add("signup", c, "");
      signedUp.add(c.id);
    } else {
      add("purchase", c, String(e.properties.order_id));
      add("promo", c, String(e.properties.order_id));
    }
  }
  return out;
}

/**
 * One original request in this many (not counting the redeliveries' requests) is posted a
 * second time under its Idempotency-Key.
 */
const REPEAT_EVERY = 5;

export interface TrafficOptions {
  /** Distinct events. */
  events: number;
  /** Share of them delivered a second time, later or concurrently. */
  duplicates: number;
  /** Deliveries are spread evenly over this long. */
  durationMs: number;
  /** Events per request. */
  batchSize: number;
  seed: number;
}

/**
 * One signup per customer and about three orders each; a duplicate is the identical payload
 * again, half of them in a concurrent request of the same instant, half a few seconds later.
 */
export function makeTraffic(opts: TrafficOptions): Traffic {
  const rand = random(opts.seed);
  const customers: ChaosCustomer[] = [];
  const events: ChaosEvent[] = [];
  const base = Date.parse("2026-11-02T09:00:00Z");
  let orders = 0;
  for (let i = 0; events.length < opts.events; i++) {
    const c = makeCustomer(rand, i);
    customers.push(c);
    const count = Math.min(opts.events - events.length, 1 + Math.floor(rand() * 6));
    for (let n = 0; n < count; n++) {
      const signup = n === 0;
      const at = new Date(base + i * 1_000 + n * 60_000).toISOString();
      events.push({
        id: signup ? `evt_signup_${c.id}` : `evt_order_${orders}`,
        type: signup ? "signed_up" : "order.completed",
        customerId: c.id,
        occurredAt: at,
        properties: signup ? {} : { order_id: `o_${orders++}`, total: 10 + (n % 7) * 15 },
        customer: traits(c),
      });
    }
  }
  // Events arrive in a light shuffle: an order may come in before its customer's signup.
  const order = events.map((e, i) => ({ e, at: i + rand() * 20 })).sort((a, b) => a.at - b.at);
  const batches = Math.max(1, Math.ceil(events.length / opts.batchSize));
  const spacing = opts.durationMs / batches;
  const deliveries: Delivery[] = [];
  for (let b = 0; b < batches; b++) {
    deliveries.push({
      atMs: Math.round(b * spacing),
      events: order.slice(b * opts.batchSize, (b + 1) * opts.batchSize).map((o) => o.e),
      repeat: b % REPEAT_EVERY === 2,
    });
  }
  let duplicates = 0;
  const originals = deliveries.slice();
  for (const d of originals) {
    const again = d.events.filter(() => rand() < opts.duplicates);
    duplicates += again.length;
    const concurrent = again.filter(() => rand() < 0.5);
    const later = again.filter((e) => !concurrent.includes(e));
    if (concurrent.length > 0) deliveries.push({ atMs: d.atMs, events: concurrent, repeat: false });
    if (later.length > 0) {
      // Later, but still within the run: while workers are being killed.
      const when = Math.min(opts.durationMs, d.atMs + 1_000 + rand() * 8_000);
      deliveries.push({ atMs: Math.round(when), events: later, repeat: false });
    }
  }
  deliveries.sort((a, b) => a.atMs - b.atMs);
  const byId = new Map(customers.map((c) => [c.id, c]));
  return { customers, events, deliveries, duplicates, expected: expectedActions(byId, events) };
}
