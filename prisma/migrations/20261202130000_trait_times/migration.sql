-- Profile traits applied field by field, each as of the update that set it: an older update
-- arriving late changes only what no newer one set (it had been dropped whole, a late signup's
-- email with it).
ALTER TABLE "Customer" ADD COLUMN "traitTimes" JSONB NOT NULL DEFAULT '{}';

-- Each trait a customer has was set, at the latest, by the newest update applied.
UPDATE "Customer" SET "traitTimes" =
  jsonb_strip_nulls(jsonb_build_object(
    'email', CASE WHEN email IS NOT NULL THEN to_jsonb("profileOccurredAt") END,
    'phone', CASE WHEN phone IS NOT NULL THEN to_jsonb("profileOccurredAt") END,
    'timezone', CASE WHEN timezone IS NOT NULL THEN to_jsonb("profileOccurredAt") END))
  || COALESCE((SELECT jsonb_object_agg('a:' || k, to_jsonb("profileOccurredAt"))
               FROM jsonb_each(attributes) x(k, v)), '{}'::jsonb)
WHERE "profileOccurredAt" IS NOT NULL;
