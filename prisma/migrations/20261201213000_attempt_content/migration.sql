-- What each attempt sent, recorded with its call-started mark: an in-doubt SMS is looked up at
-- the provider by the number and body it was sent with, not by the profile and template as
-- they are at the look-up (a changed number or a re-rendered body would miss it, and a
-- release would send it again). Attempts made before this migration have neither.
ALTER TABLE "ActionAttempt" ADD COLUMN "address" TEXT,
ADD COLUMN "contentHash" TEXT;
