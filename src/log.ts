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
