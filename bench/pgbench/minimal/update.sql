-- The lower ceiling: the least SQL a Todo backend could send for this request
-- (plain statements, autocommit, no version, no task count, no RLS), for the
-- report's "share of the minimal SQL's ceiling". Same variables as ../*.sql.
\set u random(0, :users - 1)
\set uid :uid_base + :u
\set id :base + :u * :tasks + random(0, :tasks - 1)
UPDATE tasks SET title = :newtitle, updated_at = :now::timestamptz WHERE user_id = :uid AND id = :id RETURNING id, user_id, title, description, completed, created_at, updated_at;
