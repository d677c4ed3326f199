-- What the application's database role may do (issue 14): read and write rows, nothing more.
-- Tables belong to the owner role that runs the migrations, and the application role cannot DROP, ALTER or
-- TRUNCATE them (ownership and the TRUNCATE privilege are never granted), nor disable the audit log's
-- triggers, which refuse UPDATE, DELETE and TRUNCATE on audit_log for everybody.
-- Placeholders: :app_role and :schema (quoted identifiers), filled in by init-app-role.sh (and the tests).
GRANT USAGE ON SCHEMA :schema TO :app_role;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :schema TO :app_role;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA :schema TO :app_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA :schema GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :app_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA :schema GRANT USAGE, SELECT ON SEQUENCES TO :app_role;
