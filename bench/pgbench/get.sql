-- Mirrors the statement todo-api sends for this request (bench/README.md, "SQL per request").
-- Keep each statement on ONE line and textually identical to the server's, with
-- its $n parameters written as :variables in the same order: the bench checks the
-- texts against pg_stat_statements. Variables: -D from run.mjs (users, tasks,
-- base = first seeded task id, uid_base, limit, one, now = 'now', title, description,
-- completed, newtitle). Seeded task ids are contiguous per user: base + u*tasks + k.
\set u random(0, :users - 1)
\set uid :uid_base + :u
\set id :base + :u * :tasks + random(0, :tasks - 1)
SELECT id, user_id, title, description, completed, created_at, updated_at, version FROM tasks WHERE user_id = :uid AND id = :id;
