// A real SMTP server for tests (smtp-server on 127.0.0.1, parsed with mailparser): records
// every message it receives, and fails on request in the ways real servers do — including the
// ones where it took the message but the sender never heard so.
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import type { Socket } from "node:net";
import { simpleParser } from "mailparser";
import type { ParsedMail } from "mailparser";
import { SMTPServer } from "smtp-server";

/** One message as the sink received it. */
export interface ReceivedMessage {
  /** With its angle brackets, as in the header: `<key@domain>`. */
  messageId: string;
  /** The envelope recipients (RCPT TO), which is who the message really went to. */
  to: string[];
  /** The envelope sender (MAIL FROM). */
  from: string;
  subject: string;
  html?: string;
  text?: string;
  /** Lower-cased header name → its value (decoded when it is plain text, else as written). */
  headers: Map<string, string>;
  /** The message exactly as it came over DATA. */
  raw: string;
}

/** A way of failing at one point of one transaction. */
export type SmtpFault =
  /**
   * Reply with this code at this stage: "connect" refuses the greeting, "mail" and "rcpt"
   * answer those commands, "data" answers after the whole body was received (and recorded).
   */
  | { kind: "reply"; stage: "connect" | "mail" | "rcpt" | "data"; code: number; message?: string }
  /** Drop the connection instead of answering at this stage: nothing was handed over. */
  | { kind: "drop_before_data"; stage: "connect" | "mail" | "rcpt" }
  /** Never answer at this stage: the client times out with nothing handed over. */
  | { kind: "hang_before_data"; stage: "connect" | "mail" | "rcpt" }
  /** Receive and record the whole message, then drop the connection without a reply. */
  | { kind: "drop_after_data" }
  /** Receive and record the whole message, then never reply. */
  | { kind: "hang_after_data" }
  /** Receive and record the whole message, and accept it only after `ms`. */
  | { kind: "slow"; ms: number }
  /**
   * A tarpit: answer the greeting, MAIL FROM and RCPT TO each after `ms`, every one within
   * the client's socket timeout, together past it; then take the message as usual.
   */
  | { kind: "tarpit"; ms: number };

/** A fault for every send until changed, or only for the next one or `count` sends. */
export type SmtpFailure =
  | SmtpFault
  | { kind: "once"; failure: SmtpFault }
  | { kind: "times"; count: number; failure: SmtpFault };

export interface SmtpSink {
  /** `smtp://127.0.0.1:<port>`, no TLS, any credentials accepted. */
  url: string;
  /** Every message received, in order, whatever the reply to it was. */
  messages: ReceivedMessage[];
  countByMessageId(): Map<string, number>;
  /** Changes how the next sends are answered; undefined answers them all with 250. */
  setFailure(failure: SmtpFailure | undefined): void;
  /** Same as setFailure, for the next `times` sends only when given. */
  fail(failure: SmtpFault | undefined, times?: number): void;
  /** Resolves once `count` messages were received in all; rejects after `timeoutMs`. */
  waitFor(count: number, timeoutMs?: number): Promise<ReceivedMessage[]>;
  close(): Promise<void>;
}

/** smtp-server replies with an error's `responseCode` and message. */
class SmtpReply extends Error {
  constructor(
    readonly responseCode: number,
    message: string,
  ) {
    super(message);
  }
}

type Stage = "connect" | "mail" | "rcpt" | "data";

/** Starts a sink on a free port of 127.0.0.1. */
export async function startSmtpSink(opts: { failure?: SmtpFailure } = {}): Promise<SmtpSink> {
  const messages: ReceivedMessage[] = [];
  const waiters = new Set<() => void>();
  let fault: SmtpFault | undefined;
  let remaining = Infinity;

  const setFailure = (f: SmtpFailure | undefined): void => {
    if (f?.kind === "once") [fault, remaining] = [f.failure, 1];
    else if (f?.kind === "times") [fault, remaining] = [f.failure, f.count];
    else [fault, remaining] = [f, Infinity];
  };
  setFailure(opts.failure);

  // A fault fires at its own stage and counts as used only when it fires, so "the next send"
  // means the next transaction that reaches that stage.
  const take = (stage: Stage): SmtpFault | undefined => {
    if (!fault || remaining <= 0) return undefined;
    const at: Stage = "stage" in fault ? fault.stage : "data";
    if (at !== stage) return undefined;
    remaining -= 1;
    return fault;
  };

  // smtp-server keeps a session's socket to itself; the client's port ties them together.
  const sockets = new Set<Socket>();
  const socketOf = (session: { remotePort: number }) =>
    [...sockets].find((s) => s.remotePort === session.remotePort);
  const refusal = (f: SmtpFault | undefined): SmtpReply | null =>
    f?.kind === "reply" ? new SmtpReply(f.code, f.message ?? `test failure ${f.code}`) : null;
  /** Answers a command at a stage before DATA as the armed fault says. */
  const answer = (
    stage: "connect" | "mail" | "rcpt",
    session: { remotePort: number },
    callback: (err?: Error | null) => void,
  ): void => {
    if (fault?.kind === "tarpit" && remaining > 0) {
      const ms = fault.ms;
      setTimeout(() => callback(), ms);
      return;
    }
    const f = take(stage);
    if (f?.kind === "drop_before_data") socketOf(session)?.destroy();
    else if (f?.kind !== "hang_before_data") callback(refusal(f));
  };

  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    logger: false,
    // A reverse lookup of 127.0.0.1 would add its latency to every test send.
    disableReverseLookup: true,
    onAuth(_auth, _session, callback) {
      callback(null, { user: "test" });
    },
    onConnect(session, callback) {
      answer("connect", session, callback);
    },
    onMailFrom(_address, session, callback) {
      answer("mail", session, callback);
    },
    onRcptTo(_address, session, callback) {
      answer("rcpt", session, callback);
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks);
        const envelope = session.envelope;
        void parse(raw, envelope).then((message) => {
          // Recorded before any reply, so a test can prove that a send it saw fail arrived.
          messages.push(message);
          for (const wake of waiters) wake();
          const f = take("data");
          if (f?.kind === "drop_after_data") {
            socketOf(session)?.destroy();
          } else if (f?.kind === "hang_after_data") {
            // never answer: the client's socket timeout is what ends this
          } else if (f?.kind === "slow") {
            setTimeout(() => callback(null, queuedReply()), f.ms);
          } else if (f?.kind === "reply") {
            callback(refusal(f));
          } else {
            callback(null, queuedReply());
          }
        }, callback);
      });
    },
  });

  // A client that dies mid-session (a SIGKILLed worker) resets its connection; smtp-server
  // reports that on the server, where an unheard 'error' would end the whole process.
  server.on("error", () => {});
  server.server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });

  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.server.address();
      resolve(typeof address === "object" && address ? address.port : 0);
    });
  });

  return {
    url: `smtp://127.0.0.1:${port}`,
    messages,
    countByMessageId() {
      const counts = new Map<string, number>();
      for (const m of messages) counts.set(m.messageId, (counts.get(m.messageId) ?? 0) + 1);
      return counts;
    },
    setFailure,
    fail(f, times) {
      setFailure(f && times !== undefined ? { kind: "times", count: times, failure: f } : f);
    },
    waitFor(count, timeoutMs = 5_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (messages.length < count) return;
          done();
          resolve(messages.slice());
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(`SMTP sink: ${messages.length} of ${count} messages after ${timeoutMs} ms`),
          );
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    close() {
      // A hanging session would keep server.close() waiting for it.
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** What Postfix answers, so the channel's queue-id parsing meets a realistic reply. */
function queuedReply(): string {
  return `Ok: queued as ${randomBytes(5).toString("hex").toUpperCase()}`;
}

async function parse(
  raw: Buffer,
  envelope: { mailFrom: false | { address: string }; rcptTo: { address: string }[] },
): Promise<ReceivedMessage> {
  const mail: ParsedMail = await simpleParser(raw, { skipImageLinks: true });
  const headers = new Map<string, string>();
  for (const { key, line } of mail.headerLines) {
    const decoded = mail.headers.get(key);
    headers.set(
      key,
      typeof decoded === "string"
        ? decoded
        : line
            .slice(line.indexOf(":") + 1)
            .replace(/\r?\n[ \t]+/g, " ")
            .trim(),
    );
  }
  return {
    messageId: mail.messageId ?? "",
    to: envelope.rcptTo.map((r) => r.address),
    from: envelope.mailFrom ? envelope.mailFrom.address : "",
    subject: mail.subject ?? "",
    ...(mail.html !== false && { html: mail.html }),
    ...(mail.text !== undefined && { text: mail.text }),
    headers,
    raw: raw.toString("utf8"),
  };
}

/** A URL on which nothing listens: connecting to it is refused. */
export async function closedPortUrl(): Promise<string> {
  const port = await new Promise<number>((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      s.close(() => resolve(typeof address === "object" && address ? address.port : 1));
    });
  });
  return `smtp://127.0.0.1:${port}`;
}
