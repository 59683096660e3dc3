// Each way an SMTP server can answer, against a real one, and the failure class it becomes;
// then the file outboxes that stand in for SMTP and Twilio, and the recording channel.
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { simpleParser } from "mailparser";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChannelError } from "../../src/channels/channel";
import type { EmailMessage } from "../../src/channels/channel";
import { createSmtpChannel } from "../../src/channels/email-smtp";
import {
  countOutbox,
  createEmailOutbox,
  createRecorder,
  createSmsOutbox,
} from "../../src/channels/outbox";
import type { SmtpFault, SmtpSink } from "../support/smtp";
import { closedPortUrl, startSmtpSink } from "../support/smtp";

const RECIPIENT = "ana.recipient@example.com";

const message = (key: string): EmailMessage => ({
  to: RECIPIENT,
  subject: "Hello Ana",
  html: "<p>Hi Ana</p>",
  text: "Hi Ana",
  messageId: `<${key}@shop.example>`,
  headers: {
    "List-Unsubscribe": `<https://shop.example/u/${key}>`,
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    "X-Campaign": "spring",
  },
});

describe("SMTP channel", () => {
  let sink: SmtpSink;
  beforeAll(async () => {
    sink = await startSmtpSink();
  });
  afterAll(() => sink.close());

  const channel = (url = sink.url, timeoutMs = 2_000) =>
    createSmtpChannel({ url, from: "Shop <news@shop.example>", timeoutMs });

  /** Sends once with `failure` armed for that send only; returns the ChannelError. */
  async function failureOf(
    failure: SmtpFault | undefined,
    key: string,
    opts: { url?: string; timeoutMs?: number } = {},
  ): Promise<ChannelError> {
    sink.setFailure(failure && { kind: "once", failure });
    const error = await channel(opts.url, opts.timeoutMs)
      .send(message(key), key)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    sink.setFailure(undefined);
    if (!(error instanceof ChannelError))
      throw new Error(`expected a ChannelError, got ${String(error)}`);
    // Whatever the failure, the address (PII) and the credentials stay out of the message.
    expect(error.message).not.toContain(RECIPIENT);
    expect(error.message).not.toContain("s3cret");
    return error;
  }

  const received = (key: string) => sink.countByMessageId().get(`<${key}@shop.example>`) ?? 0;

  it("delivers with the action key's Message-ID and the given headers, once", async () => {
    const delivery = await channel().send(message("k_ok"), "k_ok");
    const got = sink.messages.filter((m) => m.messageId === "<k_ok@shop.example>");
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ to: [RECIPIENT], subject: "Hello Ana", text: "Hi Ana" });
    expect(got[0]!.html).toContain("<p>Hi Ana</p>");
    expect(got[0]!.headers.get("x-campaign")).toBe("spring");
    expect(got[0]!.headers.get("list-unsubscribe")).toBe("<https://shop.example/u/k_ok>");
    expect(got[0]!.headers.get("list-unsubscribe-post")).toBe("List-Unsubscribe=One-Click");
    // The sink answers like Postfix ("250 Ok: queued as 3F2A…"): the queue id is the provider id.
    expect(delivery.providerId).toMatch(/^[0-9A-F]{10}$/);
  });

  it("authenticates when the URL carries credentials", async () => {
    await channel(sink.url.replace("smtp://", "smtp://shop:s3cret@")).send(
      message("k_auth"),
      "k_auth",
    );
    expect(received("k_auth")).toBe(1);
  });

  it("is retryable when nothing was handed over: refused, unknown host, greeting refused", async () => {
    const refused = await failureOf(undefined, "k_refused", { url: await closedPortUrl() });
    expect([refused.failure, refused.code]).toEqual(["retryable", "ECONNREFUSED"]);
    const dns = await failureOf(undefined, "k_dns", { url: "smtp://no-such-host.invalid:25" });
    expect(dns.failure).toBe("retryable");
    for (const code of [421, 554]) {
      const greeting = await failureOf(
        { kind: "reply", stage: "connect", code },
        `k_greet_${code}`,
      );
      expect([greeting.failure, greeting.code]).toEqual(["retryable", String(code)]);
    }
    expect([received("k_refused"), received("k_greet_421"), received("k_greet_554")]).toEqual([
      0, 0, 0,
    ]);
  });

  it("is retryable when the connection drops or goes silent before the body", async () => {
    // Same nodemailer error as after the body (ECONNECTION / ETIMEDOUT at "CONN"), other class.
    for (const stage of ["connect", "mail", "rcpt"] as const) {
      const dropped = await failureOf({ kind: "drop_before_data", stage }, `k_drop_${stage}`);
      expect([stage, dropped.failure]).toEqual([stage, "retryable"]);
      const silent = await failureOf({ kind: "hang_before_data", stage }, `k_hang_${stage}`, {
        timeoutMs: 300,
      });
      expect([stage, silent.failure, silent.code]).toEqual([stage, "retryable", "ETIMEDOUT"]);
    }
    expect(sink.messages.filter((m) => /k_(drop|hang)_/.test(m.messageId))).toHaveLength(0);
  });

  it("gives up a call that outlasts its timeout all told, a phase at a time", async () => {
    // Each reply comes 400 ms after its command, within the 600 ms socket timeout: together
    // 1.2 s. Past its deadline the socket is gone, so nothing more goes out, and nothing was
    // handed over: retryable. (It had taken 1.2 s and sent, past the call's lease.)
    sink.setFailure({ kind: "tarpit", ms: 400 });
    const started = Date.now();
    const error = await channel(sink.url, 600)
      .send(message("k_tarpit"), "k_tarpit")
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    sink.setFailure(undefined);
    expect(error).toBeInstanceOf(ChannelError);
    expect([(error as ChannelError).failure, (error as ChannelError).code]).toEqual([
      "retryable",
      "ETIMEDOUT",
    ]);
    expect(Date.now() - started).toBeLessThan(1_000);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(sink.messages.filter((m) => m.messageId.includes("k_tarpit"))).toHaveLength(0);
    // A server that answers in time still gets the message, over the socket given to it.
    await channel(sink.url, 600).send(message("k_in_time"), "k_in_time");
    expect(sink.messages.filter((m) => m.messageId.includes("k_in_time"))).toHaveLength(1);
    // The engine gives the call what is left of its lease: the same tarpit within 2 s is sent.
    sink.setFailure({ kind: "tarpit", ms: 400 });
    try {
      await channel(sink.url, 600).send(message("k_budget"), "k_budget", 1, 2_000);
    } finally {
      sink.setFailure(undefined);
    }
    expect(sink.messages.filter((m) => m.messageId.includes("k_budget"))).toHaveLength(1);
  });

  it("is retryable on a 4xx, before the body or after it", async () => {
    for (const [stage, code] of [
      ["mail", 421],
      ["mail", 451],
      ["rcpt", 450],
      ["data", 421],
      ["data", 451],
    ] as const) {
      const error = await failureOf({ kind: "reply", stage, code }, `k_${stage}_${code}`);
      expect([stage, error.failure, error.code]).toEqual([stage, "retryable", String(code)]);
    }
  });

  it("is permanent on a 5xx to the message", async () => {
    for (const [stage, code] of [
      ["mail", 550],
      ["rcpt", 550],
      ["data", 554],
    ] as const) {
      const error = await failureOf(
        // Real servers quote the recipient in the reply; it must not reach the error.
        { kind: "reply", stage, code, message: `<${RECIPIENT}>: Recipient address rejected` },
        `k_${stage}_${code}`,
      );
      expect([stage, error.failure, error.code]).toEqual([stage, "permanent", String(code)]);
      expect(error.message).toContain(String(code));
    }
  });

  it("is in doubt when the body went out and no reply came, and the server did get it", async () => {
    const dropped = await failureOf({ kind: "drop_after_data" }, "k_drop");
    expect(dropped.failure).toBe("in_doubt");
    const started = Date.now();
    const silent = await failureOf({ kind: "hang_after_data" }, "k_hang", { timeoutMs: 300 });
    expect(silent.failure).toBe("in_doubt");
    expect(Date.now() - started).toBeLessThan(5_000);
    // Both arrived: resending either would deliver it twice.
    expect([received("k_drop"), received("k_hang")]).toEqual([1, 1]);
  });

  it("keeps the sink's failures to the sends they were armed for", async () => {
    sink.setFailure({
      kind: "times",
      count: 2,
      failure: { kind: "reply", stage: "mail", code: 451 },
    });
    const outcomes: string[] = [];
    for (let i = 0; i < 3; i++) {
      outcomes.push(
        await channel()
          .send(message("k_times"), "k_times")
          .then(
            () => "sent",
            (e: ChannelError) => e.failure,
          ),
      );
    }
    expect(outcomes).toEqual(["retryable", "retryable", "sent"]);
    expect(received("k_times")).toBe(1);
  });
});

describe("file outboxes", () => {
  const fresh = () => mkdtempSync(join(tmpdir(), "sendonce-outbox-"));

  it("write one parseable .eml per send with the real headers", async () => {
    const dir = join(fresh(), "nested", "email");
    const outbox = createEmailOutbox(dir, "Shop <news@shop.example>");
    const delivery = await outbox.send(message("k1"), "k1");
    const files = readdirSync(dir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^k1\..+\.eml$/);
    expect(delivery.providerId).toBe(`outbox:${files[0]}`);

    const mail = await simpleParser(readFileSync(join(dir, files[0]!)));
    expect(mail.messageId).toBe("<k1@shop.example>");
    expect(mail.subject).toBe("Hello Ana");
    expect(mail.text?.trim()).toBe("Hi Ana");
    // mailparser folds List-* headers into one structured "list" header; the lines are as written.
    const lines = mail.headerLines.map((h) => h.line);
    expect(lines).toContain("List-Unsubscribe-Post: List-Unsubscribe=One-Click");
    expect(lines).toContain("List-Unsubscribe: <https://shop.example/u/k1>");
    expect(countOutbox(dir)).toEqual({ files: 1, keys: 1, duplicates: 0, duplicateKeys: [] });
  });

  it("never overwrite: a second send of a key is a second file, counted as a duplicate", async () => {
    const dir = fresh();
    const outbox = createEmailOutbox(dir, "news@shop.example");
    await Promise.all(["k1", "k2", "k3"].map((k) => outbox.send(message(k), k)));
    expect(countOutbox(dir)).toEqual({ files: 3, keys: 3, duplicates: 0, duplicateKeys: [] });

    const [a, b] = await Promise.all([
      outbox.send(message("k1"), "k1"),
      outbox.send(message("k1"), "k1"),
    ]);
    expect(a.providerId).not.toBe(b.providerId);
    expect(countOutbox(dir)).toEqual({ files: 5, keys: 3, duplicates: 2, duplicateKeys: ["k1"] });
  });

  it("count keys from the Message-ID, not from the file name", async () => {
    const dir = fresh();
    const outbox = createEmailOutbox(dir, "news@shop.example");
    await outbox.send(message("k1"), "k1");
    const [name] = readdirSync(dir);
    // The same message filed under another name is still a second send of k1.
    writeFileSync(join(dir, "renamed.eml"), readFileSync(join(dir, name!)));
    // A half-written temporary file left by a crash is not a send.
    writeFileSync(join(dir, ".k9.abc.eml.tmp"), "Message-ID: <k9@shop.example>\r\n");
    expect(countOutbox(dir)).toEqual({ files: 2, keys: 1, duplicates: 1, duplicateKeys: ["k1"] });
  });

  it("keep every SMS send as its own file", async () => {
    const dir = fresh();
    const outbox = createSmsOutbox(dir);
    const first = await outbox.send({ to: "+4915112345678", body: "Hi" }, "s1");
    await outbox.send({ to: "+4915112345678", body: "Other" }, "s2");
    expect(countOutbox(dir)).toEqual({ files: 2, keys: 2, duplicates: 0, duplicateKeys: [] });
    const record: unknown = JSON.parse(readFileSync(join(dir, first.providerId.slice(7)), "utf8"));
    expect(record).toMatchObject({ to: "+4915112345678", body: "Hi", actionKey: "s1" });

    await outbox.send({ to: "+4915112345678", body: "Hi" }, "s1");
    expect(countOutbox(dir)).toEqual({ files: 3, keys: 2, duplicates: 1, duplicateKeys: ["s1"] });
  });

  it("count nothing in a directory that does not exist yet", () => {
    expect(countOutbox(join(fresh(), "none"))).toEqual({
      files: 0,
      keys: 0,
      duplicates: 0,
      duplicateKeys: [],
    });
  });
});

describe("the recording channel (SENDONCE_RECORD_ONLY)", () => {
  it("writes one line per send, batching a turn's sends, each answered once its line is written", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sendonce-record-"));
    const file = join(dir, "sent.txt");
    const recorder = createRecorder(file);
    const lines = () => readFileSync(file, "utf8").split("\n").filter(Boolean);
    // Three sends in one turn: when the first answers, all three lines are in the file.
    const first = await Promise.all(
      ["k1", "k2", "k3"].map(async (k) => {
        const delivery = await recorder.email.send(message(k), k);
        return { delivery, seen: lines().length };
      }),
    );
    expect(first.map((f) => f.delivery.providerId)).toEqual([
      "recorded:k1",
      "recorded:k2",
      "recorded:k3",
    ]);
    expect(first.every((f) => f.seen === 3)).toBe(true);
    // A later send appends; an SMS records its channel.
    await recorder.sms.send({ to: "+15550100", body: "Hi" }, "k4");
    await recorder.email.close();
    expect(lines()).toEqual(["email k1", "email k2", "email k3", "sms k4"]);
  });
});
