// Email over SMTP (nodemailer). One connection per message: a pooled connection that dies
// mid-pool would blur which message's DATA was cut off, and that is the one fact the failure
// class depends on.
import nodemailer from "nodemailer";
import type { SentMessageInfo } from "nodemailer/lib/smtp-transport";
import type { Delivery, EmailChannel, EmailMessage, FailureClass } from "./channel";
import { ChannelError } from "./channel";

export interface SmtpOptions {
  url: string;
  from: string;
  /** Bounds connecting, the greeting and any silence on the socket. */
  timeoutMs?: number;
}

export function createSmtpChannel(opts: SmtpOptions): EmailChannel {
  const timeout = opts.timeoutMs ?? 30_000;
  const transport = nodemailer.createTransport({
    url: opts.url,
    connectionTimeout: timeout,
    greetingTimeout: timeout,
    socketTimeout: timeout,
    logger: false,
  });
  return {
    async send(message: EmailMessage): Promise<Delivery> {
      let info: SentMessageInfo;
      try {
        info = await transport.sendMail({
          from: opts.from,
          to: message.to,
          subject: message.subject,
          ...(message.html !== undefined && { html: message.html }),
          ...(message.text !== undefined && { text: message.text }),
          messageId: message.messageId,
          ...(message.headers && { headers: message.headers }),
        });
      } catch (error) {
        throw classifySmtpError(error);
      }
      return { providerId: queueId(info.response) ?? message.messageId };
    },
    close: () => Promise.resolve(transport.close()),
  };
}

interface NodemailerError {
  code?: string;
  command?: string;
  responseCode?: number;
  message?: string;
}

/**
 * DESIGN §3 for SMTP: 4xx → retry; 5xx → refused; no reply at all → it depends on whether the
 * message body may have reached the server, which nodemailer tells by the command in flight.
 */
export function classifySmtpError(error: unknown): ChannelError {
  const e = (error ?? {}) as NodemailerError;
  const code = e.responseCode;
  if (code !== undefined && code >= 400 && code < 500) {
    return new ChannelError(
      `SMTP ${code} at ${e.command ?? "connect"}: try later`,
      "retryable",
      String(code),
    );
  }
  if (code !== undefined && code >= 500) {
    return new ChannelError(
      `SMTP ${code} at ${e.command ?? "connect"}: refused`,
      "permanent",
      String(code),
    );
  }
  const failure: FailureClass =
    e.command === "DATA" || e.code === "EMESSAGE" ? "in_doubt" : "retryable";
  const stage = e.command ?? "connect";
  return new ChannelError(
    failure === "in_doubt"
      ? `no answer after the message was sent (${e.code ?? "error"} at ${stage}): the server may have taken it`
      : `could not hand the message over (${e.code ?? "error"} at ${stage})`,
    failure,
    e.code,
  );
}

/** `250 2.0.0 Ok: queued as 4Xy9` → `4Xy9`; servers differ, so anything else is undefined. */
function queueId(response: string | undefined): string | undefined {
  return response && /queued as\s+([^\s>]+)/i.exec(response)?.[1];
}
