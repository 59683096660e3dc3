-- A replayed Idempotency-Key answer is the first answer as it was sent: json keeps an
-- answer's keys in their order, where jsonb had reordered the keys of the body it replayed.
-- (Answers stored before this migration keep jsonb's order.)
ALTER TABLE "IdempotencyKey" ALTER COLUMN "responseBody" SET DATA TYPE JSON;
