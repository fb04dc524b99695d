-- Run once by the postgres image on an empty volume: POSTGRES_DB creates the catalog database
-- (radgate); MLflow's tracking and registry get their own.
CREATE DATABASE mlflow OWNER radgate;
