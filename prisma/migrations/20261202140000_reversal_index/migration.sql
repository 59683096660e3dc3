-- A points grant looks for a reversal that settled before it with nothing to take back (a
-- refund processed before its order), by the grant key its audit entry names. Such entries
-- are few; this partial index holds them alone, so the look-up costs a grant next to nothing
-- however long the customer's audit trail.
CREATE INDEX "AuditEntry_reverses_idx" ON "AuditEntry" ((detail->>'reverses'))
  WHERE kind = 'skipped' AND rule = 'nothing_to_reverse';
