// One-line structured logs on stderr: `level message key=value ...`. Callers pass ids only:
// never an address, a message body, a URL with credentials or a secret.
export type Fields = Record<string, string | number | bigint | boolean | null | undefined>;

export interface Logger {
  /** Every decision, one line each (`demo --verbose`); off unless asked for. */
  debug(message: string, fields?: Fields): void;
  info(message: string, fields?: Fields): void;
  warn(message: string, fields?: Fields): void;
  error(message: string, fields?: Fields): void;
}

export function createLogger(
  opts: { quiet?: boolean; verbose?: boolean; write?: (line: string) => void } = {},
): Logger {
  const write = opts.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const emit =
    (level: string) =>
    (message: string, fields: Fields = {}) => {
      const parts = Object.entries(fields)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${formatValue(v)}`);
      write([new Date().toISOString(), level, message, ...parts].join(" "));
    };
  const info = emit("info");
  return {
    debug: opts.verbose ? emit("debug") : () => {},
    info: opts.quiet ? () => {} : info,
    warn: emit("warn"),
    error: emit("error"),
  };
}

function formatValue(v: Fields[string]): string {
  const s = String(v);
  return /[\s"=]/.test(s) ? JSON.stringify(s) : s;
}

/**
 * What went wrong, in one line: an error's first line, or, for an error with no message of its
 * own (Node's AggregateError when every address of a host refused), its first cause's, or its
 * code.
 */
export function reasonOf(error: unknown): string {
  const e = error as { message?: unknown; errors?: unknown[]; code?: unknown };
  const lines =
    typeof e?.message === "string"
      ? e.message
          .split("\n")
          .map((l) => l.trim())
          .filter(Boolean)
      : [];
  // Prisma's messages open with "Invalid `prisma.$queryRaw()` invocation:" and end with what
  // happened: "Raw query failed. Code: `N/A`. Message: `Can't reach database server at …`".
  if (lines.length > 1 && /^Invalid `.*` invocation/.test(lines[0]!)) {
    const last = lines[lines.length - 1]!;
    return /Message: `(.*)`$/.exec(last)?.[1] ?? last;
  }
  if (lines[0]) return lines[0];
  if (Array.isArray(e?.errors) && e.errors.length > 0) return reasonOf(e.errors[0]);
  if (typeof e?.code === "string") return e.code;
  return String(error);
}

/**
 * Logs an error at most once per `everyMs` for the same message: an outage (Redis down) makes
 * every connection report the same error many times a second.
 */
export function throttledError(log: Logger, everyMs = 10_000): Logger["error"] {
  const last = new Map<string, number>();
  return (message, fields = {}) => {
    const key = `${message} ${JSON.stringify(fields, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`;
    const now = Date.now();
    if (now - (last.get(key) ?? 0) < everyMs) return;
    last.set(key, now);
    if (last.size > 1_000) last.clear();
    log.error(message, fields);
  };
}
