-- An action row is updated twice on the hot path (claimed → calling → its outcome), changing
-- only its state and timestamps. With no index on those columns and room left on each page,
-- Postgres makes those updates in place (heap-only tuples) without writing to any index.
-- Caps and resend policies find a customer's recent actions by claimedAt; reports and
-- reconciliation select by claimedAt.
DROP INDEX "Action_customerId_channel_state_completedAt_idx";
DROP INDEX "Action_state_updatedAt_idx";
CREATE INDEX "Action_customerId_channel_claimedAt_idx" ON "Action"("customerId", "channel", "claimedAt");
CREATE INDEX "Action_claimedAt_idx" ON "Action"("claimedAt");
ALTER TABLE "Action" SET (fillfactor = 70);
ALTER TABLE "ActionAttempt" SET (fillfactor = 80);
