-- Mirrors the statement todo-api sends for this request (bench/README.md, "SQL per request").
-- Keep each statement on ONE line and textually identical to the server's, with
-- its $n parameters written as :variables in the same order: the bench checks the
-- texts against pg_stat_statements. Variables: -D from run.mjs (users, tasks,
-- base = first seeded task id, uid_base, limit, one, now = 'now', title, description,
-- completed, newtitle). Seeded task ids are contiguous per user: base + u*tasks + k.
\set u random(0, :users - 1)
\set uid :uid_base + :u
SELECT "tasks"."id", "tasks"."user_id", "tasks"."title", "tasks"."description", "tasks"."completed", "tasks"."created_at", "tasks"."updated_at", "tasks"."version", (SELECT COALESCE(MAX(task_count), 0) FROM "task_lists" WHERE "user_id" = :uid) AS "total_count", (SELECT COALESCE(MAX(version), 0) FROM "task_lists" WHERE "user_id" = :uid) AS "list_version" FROM "tasks" WHERE "tasks"."user_id" = :uid ORDER BY "tasks"."created_at" DESC, "tasks"."id" DESC LIMIT :limit;
