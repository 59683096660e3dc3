// Email over SMTP (nodemailer), one connection per message rather than a pool. The failure
// class hangs on one fact per message — had the server said "354, send the body" when the
// connection failed? — and nodemailer reports a reset or a timeout as { code: ECONNECTION |
// ETIMEDOUT, command: "CONN" } whatever the stage. Only the SMTP transcript tells, and a
// transport's transcript is only unambiguous when the transport carries a single message: a
// pool interleaves many. The cost is a TCP (and TLS) handshake per message.
import { Socket } from "node:net";
import nodemailer from "nodemailer";
import type { SendMailOptions } from "nodemailer";
import type { Delivery, EmailChannel, EmailMessage } from "./channel";
import { ChannelError } from "./channel";

export interface SmtpOptions {
  /** `smtp://user:pass@host:587` or `smtps://…`; STARTTLS is used when the server offers it. */
  url: string;
  from: string;
  /** Bounds connecting (DNS included), the greeting and any silence on the socket. */
  timeoutMs?: number;
}

/**
 * An email channel that hands each message to an SMTP server over its own connection. A send
 * takes what is left of its call's lease at most (the engine's `budgetMs`; `timeoutMs` without
 * one), all told: nodemailer's own timeouts bound each phase and each silence, so a server that
 * answers every command just in time could hold a call past its lease, when another worker
 * takes it as in doubt. At the deadline the socket is destroyed,
 * so nothing more goes out, and the send fails as any dropped connection does: retryable
 * before the body started, in doubt after.
 */
export function createSmtpChannel(opts: SmtpOptions): EmailChannel {
  const timeout = opts.timeoutMs ?? 30_000;
  return {
    async send(
      message: EmailMessage,
      _key?: string,
      _attempt?: number,
      budgetMs?: number,
    ): Promise<Delivery> {
      const progress = { bodyStarted: false };
      // nodemailer connects (and upgrades to TLS) over a socket it is given: this one.
      const socket = new Socket();
      const transport = nodemailer.createTransport({
        url: opts.url,
        connectionTimeout: timeout,
        greetingTimeout: timeout,
        socketTimeout: timeout,
        socket,
        // transactionLog feeds the server's replies to the watcher without piping the body
        // through it (debug would); the watcher keeps nothing and prints nothing.
        transactionLog: true,
        logger: transcriptWatcher(progress),
      });
      let timedOut = false;
      const deadline = setTimeout(() => {
        timedOut = true;
        socket.destroy();
      }, budgetMs ?? timeout);
      try {
        const info = (await transport.sendMail(mailOptions(opts.from, message))) as {
          response?: unknown;
        };
        const response = typeof info.response === "string" ? info.response : undefined;
        return { providerId: queueId(response) ?? message.messageId };
      } catch (error) {
        // Past the deadline nodemailer sees a connection closed; it was a timeout.
        throw classifySmtpError(
          timedOut ? { code: "ETIMEDOUT", command: "CONN" } : error,
          progress.bodyStarted,
        );
      } finally {
        clearTimeout(deadline);
        transport.close();
        socket.destroy();
      }
    },
    close: () => Promise.resolve(),
  };
}

/** The message as nodemailer takes it: one builder for SMTP and the file outbox. */
export function mailOptions(from: string, message: EmailMessage): SendMailOptions {
  return {
    from,
    to: message.to,
    subject: message.subject,
    ...(message.html !== undefined && { html: message.html }),
    ...(message.text !== undefined && { text: message.text }),
    messageId: message.messageId,
    ...(message.headers && { headers: message.headers }),
  };
}

/** The fields nodemailer puts on its errors (checked against smtp-server, nodemailer 10.6). */
interface NodemailerError {
  /** ESOCKET, EDNS, ETIMEDOUT, ECONNECTION, EPROTOCOL, EENVELOPE, EMESSAGE, EAUTH, … */
  code?: string;
  /** The errno behind ESOCKET / EDNS: ECONNREFUSED, ENOTFOUND, … */
  originalCode?: string;
  /** "CONN" (connecting, greeting, or a socket error at any stage), "MAIL FROM", "RCPT TO", "DATA", "AUTH …", "API". */
  command?: string;
  responseCode?: number;
  /** The server's reply line. It may quote the recipient, so it never goes into our message. */
  response?: string;
}

/** Commands whose reply is about this message, not about the session. */
const MESSAGE_COMMANDS = new Set(["MAIL FROM", "RCPT TO", "DATA"]);

/**
 * DESIGN §3 for SMTP, decided from what the server said: a 4xx reply → retryable; a 5xx reply
 * to the message → permanent; no reply at all → in_doubt once the body started going out
 * (the server may have queued it), retryable before that (it cannot have).
 */
export function classifySmtpError(error: unknown, bodyStarted: boolean): ChannelError {
  const e: NodemailerError = typeof error === "object" && error !== null ? error : {};
  const reply = e.responseCode;
  const at = e.command && e.command !== "CONN" ? ` at ${e.command}` : "";
  const status = e.response ? ` ${enhancedStatus(e.response) ?? ""}`.trimEnd() : "";
  if (reply !== undefined && reply >= 400 && reply < 500) {
    return new ChannelError(
      `SMTP ${reply}${status}${at}: deferred, try later`,
      "retryable",
      String(reply),
    );
  }
  if (reply !== undefined && reply >= 500) {
    // A refused greeting or EHLO turns the connection away (a blocked IP, a server in
    // maintenance), not this message: the same message may pass on a later connection.
    if (
      !bodyStarted &&
      !(e.command && MESSAGE_COMMANDS.has(e.command)) &&
      !e.command?.startsWith("AUTH")
    ) {
      return new ChannelError(
        `SMTP ${reply}${status}${at}: session refused, try later`,
        "retryable",
        String(reply),
      );
    }
    return new ChannelError(`SMTP ${reply}${status}${at}: refused`, "permanent", String(reply));
  }
  // nodemailer refused the message itself before any I/O (no recipient, a malformed address):
  // no retry can change that.
  if (e.command === "API" && (e.code === "EENVELOPE" || e.code === "EMESSAGE")) {
    return new ChannelError(`SMTP message not sendable (${e.code})`, "permanent", e.code);
  }
  const what = e.originalCode ?? e.code ?? "error";
  return bodyStarted
    ? new ChannelError(
        `SMTP no reply after the body was sent (${what}): the server may have accepted it`,
        "in_doubt",
        what,
      )
    : new ChannelError(`SMTP failed before the body was sent (${what})`, "retryable", what);
}

type LogFn = (entry: { tnx?: string } | undefined, message?: unknown) => void;

/**
 * A nodemailer logger that only notes when the body started going out: the server answered
 * DATA with 354, or the client finished writing the body (servers that answer DATA with 250).
 */
function transcriptWatcher(progress: { bodyStarted: boolean }) {
  const ignore: LogFn = () => {};
  const watch: LogFn = (entry, message) => {
    // 354 only: AUTH challenges are 334, and before a 354 the server has no body to keep.
    if (entry?.tnx === "server" && typeof message === "string" && message.startsWith("354")) {
      progress.bodyStarted = true;
    }
    if (entry?.tnx === "message") progress.bodyStarted = true;
  };
  return {
    level: ignore,
    trace: ignore,
    debug: watch,
    info: watch,
    warn: ignore,
    error: ignore,
    fatal: ignore,
  };
}

/** `550 5.1.1 <…>` → `5.1.1`: the RFC 3463 status carries no address, unlike the text. */
function enhancedStatus(response: string): string | undefined {
  return /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(response)?.[1];
}

// The final reply's queue id, in the forms the common MTAs use; anything else is undefined.
const QUEUE_ID = [
  /queued as\s+([^\s>]+)/i, // Postfix, SendGrid, smtp-server tests: "250 2.0.0 Ok: queued as 4Xy9"
  /\bid=([^\s>]+)/i, // Exim: "250 OK id=1tXyZa-000abc-Qr"
  /^250[ -](?:\d\.\d{1,3}\.\d{1,3} )?(?:OK )?<([^<>\s]+)>/i, // Exchange, Microsoft 365: "250 2.0.0 OK <id@host>"
  /^250[ -](?:\d\.\d{1,3}\.\d{1,3} )?(\S+) Message accepted/i, // Sendmail
  /^250 Ok ([0-9a-f]+(?:-[0-9a-f]+)+)$/i, // Amazon SES
];

/** The server's queue id from its final 250 reply, when it gives one in a known form. */
function queueId(response: string | undefined): string | undefined {
  if (!response) return undefined;
  for (const pattern of QUEUE_ID) {
    const id = pattern.exec(response.trim())?.[1];
    if (id) return id;
  }
  return undefined;
}
