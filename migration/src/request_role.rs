//! The role requests run as on PostgreSQL: `todo_request`, `NOLOGIN`,
//! without `BYPASSRLS`, granted only what requests do to the user tables.
//! A request's transaction takes it (`SET LOCAL ROLE`), so row-level
//! security holds even when the service connects as the tables' owner or a
//! superuser, as PostgREST does with its roles.
//!
//! [`ENSURE`] runs after the migrations at every start-up, in their
//! transaction: it creates the role if it can (a role with `CREATEROLE`,
//! as Neon's default one), grants it what it lacks, and makes the
//! migrating role a member (so it may take it). Where it cannot, it goes
//! on quietly (a `DEBUG` notice): start-up's check (`DB_ROW_LEVEL_SECURITY`)
//! says what is missing, and an administrator may create the role later.

/// The role requests take.
pub const REQUEST_ROLE: &str = "todo_request";

/// The setting that holds the request's user inside its transaction.
pub const USER_SETTING: &str = "todo.user_id";

/// The tables that hold user data (each has `user_id`).
pub const USER_TABLES: [&str; 4] = ["tasks", "task_lists", "idempotency_keys", "task_tombstones"];

/// Idempotent; grants only what is missing (a `GRANT` rewrites the table's
/// catalogue row, and every instance runs this at start-up). Roles are the
/// cluster's, not the database's: instances of other databases may create
/// or grant the same role at the same moment (the unique violations).
pub const ENSURE: &str = r#"
DO $ensure$
DECLARE
    tbl text;
    seq text := pg_get_serial_sequence('tasks', 'id');
    may_take boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'todo_request') THEN
        BEGIN
            CREATE ROLE todo_request NOLOGIN;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE DEBUG 'role todo_request does not exist and % may not create it', current_user;
                RETURN;
            WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT has_schema_privilege('todo_request', current_schema(), 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO todo_request', current_schema());
    END IF;
    FOREACH tbl IN ARRAY ARRAY['tasks', 'task_lists', 'idempotency_keys', 'task_tombstones'] LOOP
        IF NOT (has_table_privilege('todo_request', tbl, 'SELECT') AND has_table_privilege('todo_request', tbl, 'INSERT')
                AND has_table_privilege('todo_request', tbl, 'UPDATE') AND has_table_privilege('todo_request', tbl, 'DELETE')) THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.%I TO todo_request', current_schema(), tbl);
        END IF;
    END LOOP;
    IF seq IS NOT NULL AND NOT has_sequence_privilege('todo_request', seq, 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO todo_request', seq);
    END IF;
    -- PostgreSQL 16 splits membership into ADMIN, INHERIT and SET: the
    -- creator of a role holds it with ADMIN only, and SET ROLE needs SET.
    IF current_setting('server_version_num')::int >= 160000 THEN
        may_take := pg_has_role(current_user, 'todo_request', 'SET');
    ELSE
        may_take := pg_has_role(current_user, 'todo_request', 'MEMBER');
    END IF;
    IF NOT may_take THEN
        BEGIN
            EXECUTE format('GRANT todo_request TO %I', current_user)
                || CASE WHEN current_setting('server_version_num')::int >= 160000 THEN ' WITH SET TRUE' ELSE '' END;
        EXCEPTION
            WHEN insufficient_privilege OR invalid_grant_operation THEN
                RAISE DEBUG '% may not grant itself role todo_request', current_user;
            WHEN unique_violation THEN NULL;
        END;
    END IF;
END
$ensure$
"#;
