// Each way an SMTP server can answer, against a real one, and the failure class it becomes.
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChannelError } from "../../src/channels/channel";
import type { EmailMessage } from "../../src/channels/channel";
import { createSmtpChannel } from "../../src/channels/email-smtp";
import { countOutbox, createEmailOutbox, createSmsOutbox } from "../../src/channels/outbox";
import type { SmtpFailure, SmtpSink } from "../support/smtp";
import { closedPortUrl, startSmtpSink } from "../support/smtp";

const message = (key: string): EmailMessage => ({
  to: "ana@example.com",
  subject: "Hello Ana",
  html: "<p>Hi</p>",
  text: "Hi",
  messageId: `<${key}@shop.example>`,
  headers: { "X-Campaign": "spring" },
});

describe("SMTP channel", () => {
  let sink: SmtpSink;
  beforeAll(async () => {
    sink = await startSmtpSink();
  });
  afterAll(() => sink.close());

  const channel = () =>
    createSmtpChannel({ url: sink.url, from: "Shop <news@shop.example>", timeoutMs: 1_000 });

  async function failureOf(
    failure: SmtpFailure | undefined,
    key: string,
    url?: string,
  ): Promise<ChannelError> {
    sink.fail(failure, 1);
    const c = url
      ? createSmtpChannel({ url, from: "news@shop.example", timeoutMs: 1_000 })
      : channel();
    const error = await c.send(message(key), key).then(
      () => undefined,
      (e: unknown) => e,
    );
    if (!(error instanceof ChannelError))
      throw new Error(`expected a ChannelError, got ${String(error)}`);
    return error;
  }

  it("delivers with the action key's Message-ID and the given headers", async () => {
    const delivery = await channel().send(message("k_ok"), "k_ok");
    const got = sink.messages.find((m) => m.messageId === "<k_ok@shop.example>")!;
    expect(got.subject).toBe("Hello Ana");
    expect(got.to).toEqual(["ana@example.com"]);
    expect(got.headers.get("x-campaign")).toBe("spring");
    expect(delivery.providerId).toBeTruthy();
  });

  it("retries when nothing was handed over: connection refused, 4xx before and after DATA", async () => {
    expect((await failureOf(undefined, "k_refused", await closedPortUrl())).failure).toBe(
      "retryable",
    );
    expect((await failureOf({ kind: "reply", stage: "mail", code: 421 }, "k_421")).failure).toBe(
      "retryable",
    );
    const late = await failureOf({ kind: "reply", stage: "data", code: 451 }, "k_451");
    expect([late.failure, late.code]).toEqual(["retryable", "451"]);
  });

  it("gives up on a 5xx: the server refused for good", async () => {
    const rcpt = await failureOf({ kind: "reply", stage: "rcpt", code: 550 }, "k_550");
    expect([rcpt.failure, rcpt.code]).toEqual(["permanent", "550"]);
    expect((await failureOf({ kind: "reply", stage: "data", code: 554 }, "k_554")).failure).toBe(
      "permanent",
    );
  });

  it("is in doubt when the body went out and no reply came: dropped or timed out", async () => {
    const dropped = await failureOf({ kind: "drop_after_data" }, "k_drop");
    expect(dropped.failure).toBe("in_doubt");
    const silent = await failureOf({ kind: "hang_after_data" }, "k_hang");
    expect(silent.failure).toBe("in_doubt");
    // The server did receive both: resending would duplicate them.
    const counts = sink.countByMessageId();
    expect([counts.get("<k_drop@shop.example>"), counts.get("<k_hang@shop.example>")]).toEqual([
      1, 1,
    ]);
  });

  it("never puts the recipient's address in an error", async () => {
    const error = await failureOf({ kind: "reply", stage: "rcpt", code: 550 }, "k_pii");
    expect(error.message).not.toContain("ana@example.com");
  });
});

describe("file outboxes", () => {
  it("write one parseable .eml per send and count a planted duplicate", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sendonce-outbox-"));
    const outbox = createEmailOutbox(dir, "Shop <news@shop.example>");
    await outbox.send(message("k1"), "k1");
    await outbox.send(message("k2"), "k2");
    expect(countOutbox(dir)).toEqual({ files: 2, keys: 2, duplicates: 0, duplicateKeys: [] });
    const first = readdirSync(dir).find((n) => n.startsWith("k1."))!;
    expect(readFileSync(join(dir, first), "utf8")).toMatch(/^Message-ID: <k1@shop\.example>$/m);

    await outbox.send(message("k1"), "k1");
    expect(countOutbox(dir)).toEqual({ files: 3, keys: 2, duplicates: 1, duplicateKeys: ["k1"] });
  });

  it("keep every SMS send as its own file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sendonce-outbox-"));
    const outbox = createSmsOutbox(dir);
    await outbox.send({ to: "+4915112345678", body: "Hi" }, "s1");
    await outbox.send({ to: "+4915112345678", body: "Hi" }, "s1");
    expect(countOutbox(dir)).toMatchObject({ files: 2, keys: 1, duplicates: 1 });
  });
});
