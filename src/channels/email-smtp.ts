// Email over SMTP (nodemailer). A connection of its own per message: the failure class
// depends on one fact per message — did the server say "354, send the body" before the
// connection failed? — and nodemailer reports socket errors as "CONN" whatever the stage, so
// each send watches its own SMTP transcript for that reply.
import nodemailer from "nodemailer";
import type { SendMailOptions } from "nodemailer";
import type { Delivery, EmailChannel, EmailMessage } from "./channel";
import { ChannelError } from "./channel";

export interface SmtpOptions {
  url: string;
  from: string;
  /** Bounds connecting, the greeting and any silence on the socket. */
  timeoutMs?: number;
}

export function createSmtpChannel(opts: SmtpOptions): EmailChannel {
  const timeout = opts.timeoutMs ?? 30_000;
  return {
    async send(message: EmailMessage): Promise<Delivery> {
      const stage = { bodyRequested: false };
      const transport = nodemailer.createTransport({
        url: opts.url,
        connectionTimeout: timeout,
        greetingTimeout: timeout,
        socketTimeout: timeout,
        // The transcript goes to this watcher only; nothing of it is printed or kept.
        logger: transcriptWatcher(stage),
        debug: true,
      });
      try {
        const info = (await transport.sendMail(mailOptions(opts.from, message))) as {
          response?: string;
        };
        return { providerId: queueId(info.response) ?? message.messageId };
      } catch (error) {
        throw classifySmtpError(error, stage.bodyRequested);
      } finally {
        transport.close();
      }
    },
    close: () => Promise.resolve(),
  };
}

/** The message as nodemailer takes it: the same for SMTP and the file outbox. */
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

interface NodemailerError {
  code?: string;
  command?: string;
  responseCode?: number;
}

/**
 * DESIGN §3 for SMTP: a 4xx reply → retry; a 5xx reply → refused; no reply at all → in doubt
 * once the server asked for the body (it may have taken the message), otherwise a retry.
 */
export function classifySmtpError(error: unknown, bodyRequested: boolean): ChannelError {
  const e = (error ?? {}) as NodemailerError;
  const code = e.responseCode;
  const at = e.command && e.command !== "CONN" ? ` at ${e.command}` : "";
  if (code !== undefined && code >= 400 && code < 500) {
    return new ChannelError(`SMTP ${code}${at}: try later`, "retryable", String(code));
  }
  if (code !== undefined && code >= 500) {
    return new ChannelError(`SMTP ${code}${at}: refused`, "permanent", String(code));
  }
  const what = e.code ?? "error";
  return bodyRequested
    ? new ChannelError(
        `no reply after the message body was sent (${what}): the server may have accepted it`,
        "in_doubt",
        e.code,
      )
    : new ChannelError(
        `could not hand the message over (${what} before DATA)`,
        "retryable",
        e.code,
      );
}

type LogFn = (entry: { tnx?: string } | undefined, message?: string) => void;

/** A nodemailer logger that only notes when the server answers DATA with 354. */
function transcriptWatcher(stage: { bodyRequested: boolean }) {
  const ignore: LogFn = () => {};
  const debug: LogFn = (entry, message) => {
    if (entry?.tnx === "server" && typeof message === "string" && message.startsWith("354")) {
      stage.bodyRequested = true;
    }
  };
  return {
    level: ignore,
    trace: ignore,
    debug,
    info: ignore,
    warn: ignore,
    error: ignore,
    fatal: ignore,
  };
}

/** `250 2.0.0 Ok: queued as 4Xy9` → `4Xy9`; servers differ, so anything else is undefined. */
function queueId(response: string | undefined): string | undefined {
  return response && /queued as\s+([^\s>]+)/i.exec(response)?.[1];
}
