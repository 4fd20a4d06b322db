-- Mirrors the statement todo-api sends for this request (bench/README.md, "SQL per request").
-- Keep each statement on ONE line and textually identical to the server's, with
-- its $n parameters written as :variables in order (the bench compares the texts
-- with pg_stat_statements' with every $n read as the same). Variables: -D from
-- run.mjs (users, tasks, base = first seeded task id, uid_base, limit, one,
-- now = 'now', title, description, completed, newtitle, maxtasks).
-- One statement, one round trip: the user's list row counts the create (under
-- its lock, below the limit), and the insert takes the row it let through.
\set u random(0, :users - 1)
\set uid :uid_base + :u
WITH counted AS (INSERT INTO task_lists (user_id, task_count, version) SELECT :uid, 1, 1 WHERE true ON CONFLICT (user_id) DO UPDATE SET task_count = task_lists.task_count + 1, version = task_lists.version + 1 WHERE task_lists.task_count < :maxtasks RETURNING version), inserted AS (INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at, version) SELECT :uid, :title, :description, :completed::boolean, :now::timestamptz, :now::timestamptz, version FROM counted RETURNING id, user_id, title, description, completed, created_at, updated_at, version) SELECT id, user_id, title, description, completed, created_at, updated_at, version FROM inserted;
