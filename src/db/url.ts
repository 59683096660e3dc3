// Prisma's convention: `?schema=name` in DATABASE_URL picks the Postgres schema. The pg
// driver does not know that parameter, so it is split off here for both pg and Prisma.

export interface ConnectionOptions {
  connectionString: string;
  schema: string;
}

export function connectionOptions(databaseUrl: string): ConnectionOptions {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    throw new Error(
      "DATABASE_URL is not a valid URL: expected postgresql://user@host:5432/database",
    );
  }
  if (url.protocol !== "postgresql:" && url.protocol !== "postgres:") {
    throw new Error(`DATABASE_URL must start with postgresql://, not ${url.protocol}//`);
  }
  const schema = url.searchParams.get("schema") ?? "public";
  url.searchParams.delete("schema");
  return { connectionString: url.toString(), schema };
}

/** The URL with its password hidden, for logs and messages. */
export function redactUrl(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    if (url.password) url.password = "***";
    // libpq and pg also take the password as a parameter.
    for (const name of ["password", "sslpassword"])
      if (url.searchParams.has(name)) url.searchParams.set(name, "***");
    return url.toString();
  } catch {
    return "(invalid URL)";
  }
}
