// The channel port: a channel sends one message under one action key and either returns the
// provider's id or throws a ChannelError that says, from where the provider answered, whether
// the send was not done (retry), definitely refused (permanent) or may have happened (in_doubt).

/** DESIGN §3 failure classes. */
export type FailureClass = "retryable" | "permanent" | "in_doubt";

export class ChannelError extends Error {
  override readonly name = "ChannelError";
  constructor(
    message: string,
    readonly failure: FailureClass,
    /** The provider's own code (SMTP reply code, Twilio error code, errno), when there is one. */
    readonly code?: string,
  ) {
    super(message);
  }
}

/** What a successful send returns: the provider's id for the message. */
export interface Delivery {
  providerId: string;
}

export interface EmailMessage {
  to: string;
  subject: string;
  html?: string;
  text?: string;
  /** `<actionKey@domain>`: the provider's dedupe handle and our reconciliation key. */
  messageId: string;
  headers?: Record<string, string>;
}

export interface SmsMessage {
  to: string;
  body: string;
}

/** A message as the provider lists it. */
export interface ProviderMessage {
  sid: string;
  body: string;
  dateCreated: Date;
  /** The provider's status; `failed` and `canceled` say it never sent the message. */
  status?: string;
}

/** A channel sends one message for one action key. */
export interface Channel<M> {
  /**
   * `attempt` numbers the action's attempts, for the provider's reports on this one.
   * `budgetMs`, when given, is how long the call may take all told: past it another worker may
   * take the call as in doubt (the engine gives what is left of the call's lease).
   */
  send(message: M, actionKey: string, attempt?: number, budgetMs?: number): Promise<Delivery>;
  /**
   * Where the provider can list what it took: its messages to `to` created since `since`.
   * In-doubt sends are looked up there (src/ledger/provider-match.ts); absent on channels that
   * cannot list.
   */
  list?(to: string, since: Date): Promise<ProviderMessage[]>;
  close(): Promise<void>;
}

export type EmailChannel = Channel<EmailMessage>;
export type SmsChannel = Channel<SmsMessage>;
