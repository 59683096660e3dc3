// The journeys a worker runs. Every version that ever enrolled someone is stored, so an
// enrollment keeps walking the version it started on even after the file changes.
import type { Db } from "../db/client";
import type { CompiledJourney } from "../journeys/compile";
import { compileJourney } from "../journeys/compile";
import type { Journey, Policies } from "../journeys/types";

export class JourneyCatalog {
  private readonly compiled = new Map<string, CompiledJourney>();
  readonly current: CompiledJourney[];

  private constructor(
    private readonly db: Db,
    journeys: Journey[],
    readonly policies: Policies,
  ) {
    this.current = journeys.map((j) => this.remember(compileJourney(j)));
  }

  /** Records the versions of `journeys` in the database and compiles them. */
  static async deploy(db: Db, journeys: Journey[], policies: Policies): Promise<JourneyCatalog> {
    // Workers start together: ON CONFLICT, not an upsert, so none fails on another's insert.
    for (const j of journeys) {
      await db.$executeRaw`
        INSERT INTO "JourneyVersion" ("journeyId", version, name, definition, "stepIds")
        VALUES (${j.id}, ${j.version}, ${j.name}, ${JSON.stringify(j)}::jsonb, ${j.steps.map((s) => s.id)})
        ON CONFLICT ("journeyId", version) DO NOTHING`;
    }
    return new JourneyCatalog(db, journeys, policies);
  }

  /** The journeys as given, not recorded in the database: a preview (a dry run) of them. */
  static preview(db: Db, journeys: Journey[], policies: Policies): JourneyCatalog {
    return new JourneyCatalog(db, journeys, policies);
  }

  /** The compiled journey of an enrollment's version, from the database when not deployed here. */
  async version(journeyId: string, version: string): Promise<CompiledJourney> {
    const known = this.compiled.get(`${journeyId}@${version}`);
    if (known) return known;
    const row = await this.db.journeyVersion.findUniqueOrThrow({
      where: { journeyId_version: { journeyId, version } },
    });
    return this.remember(compileJourney(row.definition as unknown as Journey));
  }

  private remember(cj: CompiledJourney): CompiledJourney {
    this.compiled.set(`${cj.journey.id}@${cj.journey.version}`, cj);
    return cj;
  }
}
