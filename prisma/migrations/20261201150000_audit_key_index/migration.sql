-- Every audit entry about an action was indexed by its key, a hash: each send inserted two
-- entries at random places of an index that, at a million actions, no longer stays in memory.
-- Only reconciliation looks entries up by key, and only delivery events, so the index now
-- holds those alone.
DROP INDEX "AuditEntry_actionKey_idx";
CREATE INDEX "AuditEntry_delivery_actionKey_idx" ON "AuditEntry"("actionKey", "at") WHERE "kind" = 'delivery_status';
