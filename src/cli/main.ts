// The `sendonce` command line. Flags and environment are parsed here and handed down as
// plain values.
import { Command, Option } from "commander";
import { ConfigError, loadConfig, requireDatabaseUrl } from "../config";
import { MigrationError, migrate } from "../db/migrate";
import { redactUrl } from "../db/url";
import { runValidate } from "./validate";

const program = new Command("sendonce")
  .description("Marketing journeys that send once: no customer gets the same thing twice.")
  .showHelpAfterError();

program
  .command("validate")
  .description("check journeys and policies; one line per problem as file:line:column")
  .argument("[dir]", "journeys directory (default: $SENDONCE_JOURNEYS_DIR or ./journeys)")
  .addOption(
    new Option("--format <format>", "output format").choices(["text", "json"]).default("text"),
  )
  .action((dir: string | undefined, opts: { format: "text" | "json" }) => {
    process.exitCode = runValidate(dir ?? loadConfig().journeysDir, opts);
  });

const db = program.command("db").description("database commands");
db.command("migrate")
  .description("apply pending migrations to $DATABASE_URL (a no-op when up to date)")
  .action(async () => {
    const url = requireDatabaseUrl(loadConfig());
    const result = await migrate(url);
    for (const name of result.applied) console.log(`applied ${name}`);
    console.log(
      result.applied.length === 0
        ? `database ${redactUrl(url)} is up to date (${result.alreadyApplied.length} migration${result.alreadyApplied.length === 1 ? "" : "s"} applied)`
        : `applied ${result.applied.length} migration${result.applied.length === 1 ? "" : "s"} to ${redactUrl(url)}`,
    );
  });

try {
  await program.parseAsync();
} catch (error) {
  if (error instanceof ConfigError || error instanceof MigrationError) {
    console.error(`sendonce: ${error.message}`);
    process.exitCode = 1;
  } else {
    throw error;
  }
}
