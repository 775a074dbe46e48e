-- The PostgreSQL service holds Dagster's storage (POSTGRES_DB, `dagster`) and the application
-- database beside it.
CREATE DATABASE face_assets;
