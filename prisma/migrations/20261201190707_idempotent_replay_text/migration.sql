-- A replayed Idempotency-Key answer is the first answer as it was sent: json keeps its text
-- (keys in their order), where jsonb had reordered the keys of the body it replayed.
ALTER TABLE "IdempotencyKey" ALTER COLUMN "responseBody" SET DATA TYPE JSON;
