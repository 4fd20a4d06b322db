-- Mirrors the statements todo-api sends for this request (bench/README.md, "SQL per request").
-- Keep each statement on ONE line and textually identical to the server's, with
-- its $n parameters written as :variables in the same order: the bench checks the
-- texts against pg_stat_statements. Variables: -D from run.mjs (users, tasks,
-- base = first seeded task id, uid_base, limit, one, now = 'now', title, description,
-- completed, newtitle, maxtasks). Seeded task ids are contiguous per user: base + u*tasks + k.
-- One statement, one round trip: create_task (migration m20261130_000003) takes the
-- user's advisory lock, then counts the user's tasks and inserts below the limit.
-- The server's lock key is a hash of the user id; the user id itself stands in here.
\set u random(0, :users - 1)
\set uid :uid_base + :u
SELECT * FROM create_task(:uid, :uid, :title, :description, :completed, :now, :maxtasks);
