-- Mirrors the statement todo-api sends for this request (bench/README.md, "SQL per request").
-- Keep each statement on ONE line and textually identical to the server's, with
-- its $n parameters written as :variables in the same order: the bench checks the
-- texts against pg_stat_statements. Variables: -D from run.mjs (users, tasks,
-- base = first seeded task id, uid_base, limit, one, now = 'now', title, description,
-- completed, newtitle). Seeded task ids are contiguous per user: base + u*tasks + k.
\set u random(0, :users - 1)
\set uid :uid_base + :u
\set id :base + :u * :tasks + random(0, :tasks - 1)
WITH target AS (SELECT id, user_id, title, description, completed, created_at, updated_at, version FROM tasks WHERE user_id = :uid AND id = :id FOR UPDATE), bumped AS (UPDATE task_lists SET version = version + 1 WHERE user_id = :uid AND EXISTS (SELECT 1 FROM target WHERE (NULL::text IS NULL OR strpos(NULL::text, ',' || version || ',') > 0)) RETURNING version), written AS (UPDATE tasks SET title = :newtitle, updated_at = :now::timestamptz, version = bumped.version FROM bumped WHERE tasks.user_id = :uid AND tasks.id = :id RETURNING tasks.id, tasks.user_id, tasks.title, tasks.description, tasks.completed, tasks.created_at, tasks.updated_at, tasks.version) SELECT true, id, user_id, title, description, completed, created_at, updated_at, version FROM written UNION ALL SELECT false, id, user_id, title, description, completed, created_at, updated_at, version FROM target WHERE NOT EXISTS (SELECT 1 FROM written);
