-- The lower ceiling: the least SQL a Todo backend could send for this request
-- (plain statements, autocommit, no version, no task count, no RLS), for the
-- report's "share of the minimal SQL's ceiling". Same variables as ../*.sql.
\set u random(0, :users - 1)
\set uid :uid_base + :u
SELECT id, user_id, title, description, completed, created_at, updated_at FROM tasks WHERE user_id = :uid ORDER BY created_at DESC, id DESC LIMIT :limit;
