// SMS through the twilio library, against Twilio or any Twilio-compatible endpoint. The
// action key travels in the status-callback URL; failures are classified where the provider
// answered (DESIGN §3), and an in-doubt send can be looked up in the provider's message list.
import twilio from "twilio";
import type { Delivery, ProviderMessage, SmsChannel } from "./channel";
import { ChannelError } from "./channel";

export interface TwilioOptions {
  accountSid: string;
  authToken: string;
  /** A sender number, or a Messaging Service SID (MG…). */
  from?: string;
  messagingServiceSid?: string;
  /** Another origin for the REST API (a Twilio-compatible endpoint); default Twilio's own. */
  apiBaseUrl?: string;
  /** Public base of this deployment's API, for status callbacks; none when unset. */
  publicBaseUrl?: string;
  timeoutMs?: number;
}

/** Twilio error codes that mean the recipient can never receive this message. */
const RECIPIENT_OPTED_OUT = 21610;

type RequestOptions<T> = Parameters<typeof twilio.RequestClient.prototype.request<T>>[0];

/** A RequestClient that sends every call to another origin, keeping path and query. */
class OriginClient extends twilio.RequestClient {
  constructor(
    private readonly origin: URL,
    opts: ConstructorParameters<typeof twilio.RequestClient>[0],
  ) {
    super(opts);
  }

  override request<T>(opts: RequestOptions<T>) {
    const uri = new URL(opts.uri);
    uri.protocol = this.origin.protocol;
    uri.host = this.origin.host;
    return super.request<T>({ ...opts, uri: uri.toString() });
  }
}

export interface TwilioSmsChannel extends SmsChannel {
  list(to: string, since: Date): Promise<ProviderMessage[]>;
}

export function createTwilioChannel(opts: TwilioOptions): TwilioSmsChannel {
  const timeout = opts.timeoutMs ?? 30_000;
  const httpClient = opts.apiBaseUrl
    ? new OriginClient(new URL(opts.apiBaseUrl), { timeout })
    : new twilio.RequestClient({ timeout });
  const client = twilio(opts.accountSid, opts.authToken, { httpClient });
  const sender = opts.messagingServiceSid
    ? { messagingServiceSid: opts.messagingServiceSid }
    : { from: opts.from! };
  return {
    async send(message, actionKey, attempt): Promise<Delivery> {
      try {
        const created = await client.messages.create({
          to: message.to,
          body: message.body,
          ...sender,
          ...(opts.publicBaseUrl && {
            statusCallback: `${opts.publicBaseUrl.replace(/\/$/, "")}/v1/webhooks/twilio/status?key=${actionKey}${attempt ? `&attempt=${attempt}` : ""}`,
          }),
        });
        return { providerId: created.sid };
      } catch (error) {
        throw classifyTwilioError(error);
      }
    },
    async list(to, since) {
      try {
        // Not filtered by DateSent on Twilio's side: a message still queued there has none yet,
        // and it was taken all the same. Newest first; a customer's number has few.
        const found = await client.messages.list({ to, limit: 1000 });
        return found
          .filter((m) => m.dateCreated.getTime() >= since.getTime())
          .map((m) => ({ sid: m.sid, body: m.body, dateCreated: m.dateCreated, status: m.status }));
      } catch (error) {
        throw classifyTwilioError(error);
      }
    },
    close: () => Promise.resolve(),
  };
}

interface HttpishError {
  status?: number;
  code?: number | string;
  message?: string;
}

/**
 * Twilio answers as DESIGN §3 lists them: refused before anything was written, 429, 503 →
 * retry; no answer after the request went out, 500/502/504 → in doubt; 21211 and other 4xx →
 * refused for good (21610: the recipient replied STOP).
 */
export function classifyTwilioError(error: unknown): ChannelError {
  const e = (error ?? {}) as HttpishError;
  if (typeof e.status === "number") {
    const code = typeof e.code === "number" ? e.code : undefined;
    const label = `Twilio ${e.status}${code ? ` (${code})` : ""}`;
    if (e.status === 429 || e.status === 503)
      return new ChannelError(`${label}: try later`, "retryable", String(code ?? e.status));
    if (e.status >= 500)
      return new ChannelError(
        `${label}: the provider may have acted`,
        "in_doubt",
        String(code ?? e.status),
      );
    const why = code === RECIPIENT_OPTED_OUT ? "recipient opted out" : "refused";
    return new ChannelError(`${label}: ${why}`, "permanent", String(code ?? e.status));
  }
  const errno = typeof e.code === "string" ? e.code : "error";
  // Nothing was written: the connection was refused or the name did not resolve.
  if (["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"].includes(errno)) {
    return new ChannelError(`could not reach the SMS provider (${errno})`, "retryable", errno);
  }
  return new ChannelError(
    `no answer from the SMS provider (${errno}): it may have sent the message`,
    "in_doubt",
    errno,
  );
}

export { RECIPIENT_OPTED_OUT };
