-- CreateEnum
CREATE TYPE "Channel" AS ENUM ('email', 'sms', 'points');

-- CreateEnum
CREATE TYPE "ConsentStatus" AS ENUM ('granted', 'revoked');

-- CreateEnum
CREATE TYPE "EnrollmentStatus" AS ENUM ('active', 'completed', 'exited', 'failed');

-- CreateEnum
CREATE TYPE "ActionState" AS ENUM ('claimed', 'calling', 'sent', 'failed_retryable', 'failed_permanent', 'skipped', 'in_doubt');

-- CreateEnum
CREATE TYPE "DuplicateKind" AS ENUM ('duplicate', 'conflict');

-- CreateEnum
CREATE TYPE "IdempotencyStatus" AS ENUM ('in_flight', 'completed');

-- CreateTable
CREATE TABLE "Customer" (
    "id" TEXT NOT NULL,
    "email" TEXT,
    "phone" TEXT,
    "timezone" TEXT,
    "attributes" JSONB NOT NULL DEFAULT '{}',
    "profileOccurredAt" TIMESTAMPTZ(3),
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "Customer_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Consent" (
    "customerId" TEXT NOT NULL,
    "channel" "Channel" NOT NULL,
    "topic" TEXT NOT NULL,
    "status" "ConsentStatus" NOT NULL,
    "occurredAt" TIMESTAMPTZ(3) NOT NULL,
    "grantedAt" TIMESTAMPTZ(3),
    "source" TEXT NOT NULL,
    "updatedAt" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "Consent_pkey" PRIMARY KEY ("customerId","channel","topic")
);

-- CreateTable
CREATE TABLE "Event" (
    "id" BIGSERIAL NOT NULL,
    "source" TEXT NOT NULL DEFAULT 'default',
    "eventId" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "customerId" TEXT NOT NULL,
    "occurredAt" TIMESTAMPTZ(3) NOT NULL,
    "receivedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "properties" JSONB NOT NULL DEFAULT '{}',
    "customer" JSONB,
    "payloadHash" TEXT NOT NULL,
    "enqueuedAt" TIMESTAMPTZ(3),
    "processedAt" TIMESTAMPTZ(3),

    CONSTRAINT "Event_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "EventDuplicate" (
    "id" BIGSERIAL NOT NULL,
    "source" TEXT NOT NULL,
    "eventId" TEXT NOT NULL,
    "kind" "DuplicateKind" NOT NULL,
    "payloadHash" TEXT NOT NULL,
    "via" TEXT NOT NULL,
    "receivedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "EventDuplicate_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "JourneyVersion" (
    "journeyId" TEXT NOT NULL,
    "version" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "definition" JSONB NOT NULL,
    "stepIds" TEXT[],
    "deployedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "JourneyVersion_pkey" PRIMARY KEY ("journeyId","version")
);

-- CreateTable
CREATE TABLE "Enrollment" (
    "id" BIGSERIAL NOT NULL,
    "journeyId" TEXT NOT NULL,
    "journeyVersion" TEXT NOT NULL,
    "customerId" TEXT NOT NULL,
    "reference" TEXT NOT NULL,
    "triggerEventId" BIGINT NOT NULL,
    "status" "EnrollmentStatus" NOT NULL DEFAULT 'active',
    "currentStepId" TEXT,
    "stepSeq" INTEGER NOT NULL DEFAULT 0,
    "nextRunAt" TIMESTAMPTZ(3),
    "endedReason" TEXT,
    "enrolledAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMPTZ(3) NOT NULL,
    "endedAt" TIMESTAMPTZ(3),

    CONSTRAINT "Enrollment_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Action" (
    "key" TEXT NOT NULL,
    "journeyId" TEXT NOT NULL,
    "stepId" TEXT NOT NULL,
    "customerId" TEXT NOT NULL,
    "reference" TEXT NOT NULL,
    "enrollmentId" BIGINT NOT NULL,
    "channel" "Channel" NOT NULL,
    "state" "ActionState" NOT NULL,
    "reason" TEXT,
    "attempt" INTEGER NOT NULL DEFAULT 0,
    "fencingToken" INTEGER NOT NULL DEFAULT 0,
    "providerId" TEXT,
    "workerId" TEXT,
    "lastError" TEXT,
    "eventOccurredAt" TIMESTAMPTZ(3),
    "nextAttemptAt" TIMESTAMPTZ(3),
    "claimedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "callStartedAt" TIMESTAMPTZ(3),
    "completedAt" TIMESTAMPTZ(3),
    "updatedAt" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "Action_pkey" PRIMARY KEY ("key")
);

-- CreateTable
CREATE TABLE "ActionAttempt" (
    "actionKey" TEXT NOT NULL,
    "attempt" INTEGER NOT NULL,
    "fencingToken" INTEGER NOT NULL,
    "workerId" TEXT NOT NULL,
    "outcome" TEXT,
    "providerId" TEXT,
    "error" TEXT,
    "startedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "finishedAt" TIMESTAMPTZ(3),

    CONSTRAINT "ActionAttempt_pkey" PRIMARY KEY ("actionKey","attempt")
);

-- CreateTable
CREATE TABLE "PointsEntry" (
    "id" BIGSERIAL NOT NULL,
    "customerId" TEXT NOT NULL,
    "amount" INTEGER NOT NULL,
    "reason" TEXT NOT NULL,
    "actionKey" TEXT NOT NULL,
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "PointsEntry_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "PointsBalance" (
    "customerId" TEXT NOT NULL,
    "balance" INTEGER NOT NULL DEFAULT 0,
    "updatedAt" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "PointsBalance_pkey" PRIMARY KEY ("customerId")
);

-- CreateTable
CREATE TABLE "AuditEntry" (
    "id" BIGSERIAL NOT NULL,
    "at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "kind" TEXT NOT NULL,
    "customerId" TEXT,
    "journeyId" TEXT,
    "stepId" TEXT,
    "enrollmentId" BIGINT,
    "actionKey" TEXT,
    "rule" TEXT,
    "workerId" TEXT,
    "detail" JSONB NOT NULL DEFAULT '{}',

    CONSTRAINT "AuditEntry_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "IdempotencyKey" (
    "apiKeyHash" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "requestHash" TEXT NOT NULL,
    "status" "IdempotencyStatus" NOT NULL,
    "responseStatus" INTEGER,
    "responseBody" JSONB,
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "completedAt" TIMESTAMPTZ(3),
    "expiresAt" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "IdempotencyKey_pkey" PRIMARY KEY ("apiKeyHash","key")
);

-- CreateIndex
CREATE INDEX "Event_customerId_type_occurredAt_idx" ON "Event"("customerId", "type", "occurredAt");

-- CreateIndex
CREATE INDEX "Event_processedAt_receivedAt_idx" ON "Event"("processedAt", "receivedAt");

-- CreateIndex
CREATE INDEX "Event_type_occurredAt_idx" ON "Event"("type", "occurredAt");

-- CreateIndex
CREATE UNIQUE INDEX "Event_source_eventId_key" ON "Event"("source", "eventId");

-- CreateIndex
CREATE INDEX "EventDuplicate_receivedAt_idx" ON "EventDuplicate"("receivedAt");

-- CreateIndex
CREATE INDEX "EventDuplicate_source_eventId_idx" ON "EventDuplicate"("source", "eventId");

-- CreateIndex
CREATE INDEX "JourneyVersion_journeyId_deployedAt_idx" ON "JourneyVersion"("journeyId", "deployedAt");

-- CreateIndex
CREATE INDEX "Enrollment_status_nextRunAt_idx" ON "Enrollment"("status", "nextRunAt");

-- CreateIndex
CREATE INDEX "Enrollment_customerId_journeyId_enrolledAt_idx" ON "Enrollment"("customerId", "journeyId", "enrolledAt");

-- CreateIndex
CREATE UNIQUE INDEX "Enrollment_journeyId_customerId_reference_key" ON "Enrollment"("journeyId", "customerId", "reference");

-- CreateIndex
CREATE INDEX "Action_customerId_channel_state_completedAt_idx" ON "Action"("customerId", "channel", "state", "completedAt");

-- CreateIndex
CREATE INDEX "Action_customerId_stepId_journeyId_idx" ON "Action"("customerId", "stepId", "journeyId");

-- CreateIndex
CREATE INDEX "Action_state_updatedAt_idx" ON "Action"("state", "updatedAt");

-- CreateIndex
CREATE INDEX "Action_enrollmentId_idx" ON "Action"("enrollmentId");

-- CreateIndex
CREATE UNIQUE INDEX "PointsEntry_actionKey_key" ON "PointsEntry"("actionKey");

-- CreateIndex
CREATE INDEX "PointsEntry_customerId_idx" ON "PointsEntry"("customerId");

-- CreateIndex
CREATE INDEX "AuditEntry_customerId_at_idx" ON "AuditEntry"("customerId", "at");

-- CreateIndex
CREATE INDEX "AuditEntry_actionKey_idx" ON "AuditEntry"("actionKey");

-- CreateIndex
CREATE INDEX "AuditEntry_kind_at_idx" ON "AuditEntry"("kind", "at");

-- CreateIndex
CREATE INDEX "IdempotencyKey_expiresAt_idx" ON "IdempotencyKey"("expiresAt");

-- AddForeignKey
ALTER TABLE "Consent" ADD CONSTRAINT "Consent_customerId_fkey" FOREIGN KEY ("customerId") REFERENCES "Customer"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "Event" ADD CONSTRAINT "Event_customerId_fkey" FOREIGN KEY ("customerId") REFERENCES "Customer"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "Enrollment" ADD CONSTRAINT "Enrollment_customerId_fkey" FOREIGN KEY ("customerId") REFERENCES "Customer"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "Enrollment" ADD CONSTRAINT "Enrollment_triggerEventId_fkey" FOREIGN KEY ("triggerEventId") REFERENCES "Event"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "Action" ADD CONSTRAINT "Action_customerId_fkey" FOREIGN KEY ("customerId") REFERENCES "Customer"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "Action" ADD CONSTRAINT "Action_enrollmentId_fkey" FOREIGN KEY ("enrollmentId") REFERENCES "Enrollment"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "ActionAttempt" ADD CONSTRAINT "ActionAttempt_actionKey_fkey" FOREIGN KEY ("actionKey") REFERENCES "Action"("key") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "PointsEntry" ADD CONSTRAINT "PointsEntry_customerId_fkey" FOREIGN KEY ("customerId") REFERENCES "Customer"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "PointsBalance" ADD CONSTRAINT "PointsBalance_customerId_fkey" FOREIGN KEY ("customerId") REFERENCES "Customer"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
