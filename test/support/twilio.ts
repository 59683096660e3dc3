// A real HTTP server that speaks Twilio's Messages API (create and list), for tests: it
// records every message it accepted, keyed by the action key in the status callback, and
// fails on request with Twilio's error codes, slow answers and dropped connections.
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import twilio from "twilio";
import { afterAll, beforeAll } from "vitest";

export interface TwilioMessage {
  sid: string;
  to: string;
  from: string | null;
  body: string;
  statusCallback: string | null;
  /** The `key` query parameter of the status callback. */
  actionKey: string | null;
  dateCreated: Date;
  /** What the list says of it: `queued` until a test changes it. */
  status: string;
}

export type TwilioFailure =
  /** Answer with this HTTP status and Twilio error code; nothing is created. */
  | { kind: "error"; status: number; code: number }
  /** Create the message, then answer 500 anyway (the provider acted; the answer does not say). */
  | { kind: "error_after_create"; status: number }
  /** Create the message, then drop the connection without an answer. */
  | { kind: "drop_after_create" }
  /** Drop the connection before creating anything. */
  | { kind: "drop" }
  /** Create the message and answer after `ms`. */
  | { kind: "slow"; ms: number };

export interface TwilioServer {
  url: string;
  accountSid: string;
  authToken: string;
  messages: TwilioMessage[];
  countByKey(): Map<string, number>;
  /** Store each body as `fn` makes it, as Twilio's Smart Encoding does (until changed). */
  rewriteBodies(fn: ((body: string) => string) | undefined): void;
  /** Run `fn` on each message created, before anything is answered (until changed). */
  onCreate(fn: ((m: TwilioMessage) => Promise<void>) | undefined): void;
  /** Fail the next `times` create calls (default: until changed). */
  fail(failure: TwilioFailure | undefined, times?: number): void;
  close(): Promise<void>;
}

/** Registers the hooks that run a server for a describe block; call the getter in tests. */
export function useTwilioServer(): () => TwilioServer {
  let server: TwilioServer | undefined;
  beforeAll(async () => {
    server = await startTwilioServer();
  });
  afterAll(() => server?.close());
  return () => server!;
}

export async function startTwilioServer(): Promise<TwilioServer> {
  const accountSid = `AC${randomBytes(16).toString("hex")}`;
  const authToken = randomBytes(16).toString("hex");
  const messages: TwilioMessage[] = [];
  const sockets = new Set<Socket>();
  let failure: TwilioFailure | undefined;
  let remaining = Infinity;
  let rewrite: ((body: string) => string) | undefined;
  let created: ((m: TwilioMessage) => Promise<void>) | undefined;

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };
  const resource = (m: TwilioMessage) => ({
    sid: m.sid,
    account_sid: accountSid,
    to: m.to,
    from: m.from,
    body: m.body,
    status: m.status,
    date_created: m.dateCreated.toUTCString(),
    date_updated: m.dateCreated.toUTCString(),
    date_sent: null,
    uri: `/2010-04-01/Accounts/${accountSid}/Messages/${m.sid}.json`,
  });

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const expected = `Basic ${Buffer.from(`${accountSid}:${authToken}`).toString("base64")}`;
    if (req.headers.authorization !== expected) {
      return json(res, 401, { code: 20003, message: "Authenticate", status: 401 });
    }
    if (url.pathname !== `/2010-04-01/Accounts/${accountSid}/Messages.json`) {
      return json(res, 404, { code: 20404, message: "Not found", status: 404 });
    }
    if (req.method === "GET") {
      const to = url.searchParams.get("To");
      const page = messages.filter((m) => !to || m.to === to).map(resource);
      return json(res, 200, {
        messages: page,
        next_page_uri: null,
        page: 0,
        page_size: page.length,
      });
    }
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const form = new URLSearchParams(Buffer.concat(chunks).toString());
    const f = remaining > 0 ? failure : undefined;
    if (f) remaining -= 1;
    if (f?.kind === "error") {
      return json(res, f.status, {
        code: f.code,
        message: `test failure ${f.code}`,
        status: f.status,
      });
    }
    if (f?.kind === "drop") return req.socket.destroy();
    const callback = form.get("StatusCallback");
    const message: TwilioMessage = {
      sid: `SM${randomBytes(16).toString("hex")}`,
      to: form.get("To") ?? "",
      from: form.get("From"),
      body: (rewrite ?? String)(form.get("Body") ?? ""),
      statusCallback: callback,
      actionKey: callback ? new URL(callback).searchParams.get("key") : null,
      dateCreated: new Date(),
      status: "queued",
    };
    messages.push(message);
    await created?.(message);
    if (f?.kind === "drop_after_create") return req.socket.destroy();
    if (f?.kind === "error_after_create")
      return json(res, f.status, { code: 20500, message: "Internal", status: f.status });
    if (f?.kind === "slow") await new Promise((r) => setTimeout(r, f.ms));
    return json(res, 201, resource(message));
  };

  const server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const a = server.address();
      resolve(typeof a === "object" && a ? a.port : 0);
    }),
  );
  return {
    url: `http://127.0.0.1:${port}`,
    accountSid,
    authToken,
    messages,
    countByKey() {
      const counts = new Map<string, number>();
      for (const m of messages)
        if (m.actionKey) counts.set(m.actionKey, (counts.get(m.actionKey) ?? 0) + 1);
      return counts;
    },
    rewriteBodies(fn) {
      rewrite = fn;
    },
    onCreate(fn) {
      created = fn;
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

/**
 * A few of the replacements Twilio's Smart Encoding makes, from its published list: curly
 * quotes and apostrophes, en and em dashes, the ellipsis and the no-break space.
 */
export function smartEncode(body: string): string {
  const to: Record<string, string> = {
    "\u201C": '"',
    "\u201D": '"',
    "\u2018": "'",
    "\u2019": "'",
    "\u2013": "-",
    "\u2014": "-",
    "\u2026": "...",
    "\u00A0": " ",
  };
  return [...body].map((c) => to[c] ?? c).join("");
}

/** A webhook request as Twilio makes it: form fields, signed with the account's auth token. */
export function signedRequest(authToken: string, url: string, params: Record<string, string>) {
  return { url, params, signature: twilio.getExpectedTwilioSignature(authToken, url, params) };
}
