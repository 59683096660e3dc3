// A real SMTP server for tests (smtp-server on 127.0.0.1): records every message it receives,
// keyed by Message-ID, and fails on request in the ways real servers do.
import { createServer } from "node:net";
import type { Socket } from "node:net";
import { SMTPServer } from "smtp-server";

export interface ReceivedMessage {
  messageId: string;
  to: string[];
  subject: string;
  headers: Map<string, string>;
  raw: string;
}

export type SmtpFailure =
  /** Reply with this code at this stage ("data": after the whole body was received). */
  | { kind: "reply"; stage: "mail" | "rcpt" | "data"; code: number }
  /** Take the whole message, then drop the connection without a reply. */
  | { kind: "drop_after_data" }
  /** Take the whole message and never reply. */
  | { kind: "hang_after_data" }
  /** Take the whole message and accept it only after `ms`. */
  | { kind: "slow"; ms: number };

export interface SmtpSink {
  url: string;
  messages: ReceivedMessage[];
  countByMessageId(): Map<string, number>;
  /** Fail the next `times` sends (default: every send until changed). */
  fail(failure: SmtpFailure | undefined, times?: number): void;
  close(): Promise<void>;
}

class SmtpReplyError extends Error {
  constructor(
    message: string,
    readonly responseCode: number,
  ) {
    super(message);
  }
}

export async function startSmtpSink(): Promise<SmtpSink> {
  const messages: ReceivedMessage[] = [];
  let failure: SmtpFailure | undefined;
  let remaining = Infinity;
  const sockets = new Set<Socket>();
  const take = (stage: "mail" | "rcpt" | "data" | "after"): SmtpFailure | undefined => {
    if (!failure || remaining <= 0) return undefined;
    const applies = failure.kind === "reply" ? failure.stage === stage : stage === "after";
    if (!applies) return undefined;
    const f = failure;
    remaining -= 1;
    return f;
  };
  const replyError = (f: SmtpFailure | undefined) =>
    f?.kind === "reply" ? new SmtpReplyError(`test failure ${f.code}`, f.code) : null;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    logger: false,
    onConnect(session, callback) {
      callback();
    },
    onMailFrom(_address, _session, callback) {
      callback(replyError(take("mail")));
    },
    onRcptTo(_address, _session, callback) {
      callback(replyError(take("rcpt")));
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8");
        messages.push(
          parse(
            raw,
            session.envelope.rcptTo.map((r) => r.address),
          ),
        );
        const after = take("data") ?? take("after");
        if (after?.kind === "drop_after_data") {
          for (const s of sockets) s.destroy();
          return;
        }
        if (after?.kind === "hang_after_data") return;
        if (after?.kind === "slow") {
          setTimeout(() => callback(), after.ms);
          return;
        }
        callback(replyError(after));
      });
    },
  });
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
    fail(f, times = Infinity) {
      failure = f;
      remaining = times;
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function parse(raw: string, to: string[]): ReceivedMessage {
  const head = raw.split(/\r?\n\r?\n/)[0] ?? "";
  const headers = new Map<string, string>();
  for (const line of head.replace(/\r?\n[ \t]+/g, " ").split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  return {
    messageId: headers.get("message-id") ?? "",
    to,
    subject: headers.get("subject") ?? "",
    headers,
    raw,
  };
}

/** A URL on which nothing listens: "connection refused". */
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
