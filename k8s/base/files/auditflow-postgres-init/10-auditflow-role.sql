-- Run once by the image's entrypoint, when it initialises an empty data directory, as
-- the superuser `postgres`: the aggregator's role, which owns the AuditFlow database
-- (and through it the schema public) and nothing else. Not a superuser; it cannot
-- create databases or roles. Names and password come from the container's environment
-- (psql's \getenv), so this file holds no secret.
\getenv app_user AUDITFLOW_USER
\getenv app_password AUDITFLOW_PASSWORD
\getenv app_db POSTGRES_DB
CREATE ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'app_password';
ALTER DATABASE :"app_db" OWNER TO :"app_user";
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
