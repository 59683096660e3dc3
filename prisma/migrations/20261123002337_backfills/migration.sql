-- CreateEnum
CREATE TYPE "BackfillStatus" AS ENUM ('running', 'completed', 'failed');

-- CreateTable
CREATE TABLE "Backfill" (
    "id" TEXT NOT NULL,
    "journeyId" TEXT NOT NULL,
    "params" JSONB NOT NULL,
    "status" "BackfillStatus" NOT NULL DEFAULT 'running',
    "cursorAt" TIMESTAMPTZ(3),
    "cursorId" BIGINT,
    "cursorLine" INTEGER,
    "total" INTEGER NOT NULL DEFAULT 0,
    "done" INTEGER NOT NULL DEFAULT 0,
    "enrolled" INTEGER NOT NULL DEFAULT 0,
    "startedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMPTZ(3) NOT NULL,
    "finishedAt" TIMESTAMPTZ(3),

    CONSTRAINT "Backfill_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "Backfill_journeyId_startedAt_idx" ON "Backfill"("journeyId", "startedAt");
