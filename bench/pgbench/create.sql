-- Mirrors the statements todo-api sends for this request (bench/README.md, "SQL per request").
-- Keep each statement on ONE line and textually identical to the server's, with
-- its $n parameters written as :variables in the same order: the bench checks the
-- texts against pg_stat_statements. Variables: -D from run.mjs (users, tasks,
-- base = first seeded task id, uid_base, limit, one, now = 'now', title, description,
-- completed, newtitle, maxtasks). Seeded task ids are contiguous per user: base + u*tasks + k.
-- The server sends BEGIN and the user's lock in one round trip (one simple query);
-- the pipeline does the same here, so both make three round trips.
\set u random(0, :users - 1)
\set uid :uid_base + :u
\startpipeline
BEGIN;
SELECT pg_advisory_xact_lock(:uid);
\endpipeline
INSERT INTO "tasks" ("user_id", "title", "description", "completed", "created_at", "updated_at") SELECT :uid, :title, :description, :completed, :now, :now WHERE (SELECT COUNT("id") FROM "tasks" WHERE "tasks"."user_id" = :uid) < :maxtasks RETURNING *;
COMMIT;
