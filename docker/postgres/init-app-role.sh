#!/bin/sh
# Runs once, when the compose PostgreSQL volume is first initialised (/docker-entrypoint-initdb.d), as the
# owner role ($POSTGRES_USER, "feqa"): creates the application role the API and workers log in with
# ("feqa_app", password $FEQA_APP_DB_PASSWORD) with row rights only (app-role-grants.sql). The schema is
# created and migrated by the owner (the compose `migrate` service); default privileges give the app role
# its rights on every table the owner creates later.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE feqa_app LOGIN PASSWORD '${FEQA_APP_DB_PASSWORD:?set FEQA_APP_DB_PASSWORD}';
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
sed -e 's/:app_role/feqa_app/g' -e 's/:schema/public/g' /etc/feqa/app-role-grants.sql |
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB"
