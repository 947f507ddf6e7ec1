-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d),
-- as POSTGRES_USER, after it has created the tracker database (POSTGRES_DB).
-- The MLflow server keeps its own tables in a separate database beside it.
-- On a volume initialised before this script existed, create it by hand:
--   docker-compose exec postgres createdb -U tracker mlflow
CREATE DATABASE mlflow;
