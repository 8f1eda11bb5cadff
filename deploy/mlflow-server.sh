#!/usr/bin/env sh
# MLflow tracking server for a deployment beyond one machine (README "Scaling out"): runs and
# registered models in PostgreSQL, artifacts under a shared root that the server serves
# (clients upload through it, so workers need no access of their own). Every setting comes
# from the environment, and the store's URI reaches the server through the environment
# (MLFLOW_BACKEND_STORE_URI), so the password is neither in a file nor on a command line.
#   MLFLOW_PG_HOST MLFLOW_PG_PORT MLFLOW_PG_DB MLFLOW_PG_USER MLFLOW_PG_PASSWORD
#   MLFLOW_ARTIFACTS   a shared folder or object-store URL (s3://bucket/mlflow, …)
#   MLFLOW_HOST        the address to listen on (default 127.0.0.1), MLFLOW_PORT (default 5000)
set -eu
: "${MLFLOW_PG_HOST:?} ${MLFLOW_PG_DB:?} ${MLFLOW_PG_USER:?} ${MLFLOW_PG_PASSWORD:?}"
: "${MLFLOW_ARTIFACTS:?set MLFLOW_ARTIFACTS to a shared folder or object-store URL}"
MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://${MLFLOW_PG_USER}:${MLFLOW_PG_PASSWORD}@${MLFLOW_PG_HOST}:${MLFLOW_PG_PORT:-5432}/${MLFLOW_PG_DB}"
export MLFLOW_BACKEND_STORE_URI
exec mlflow server --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" \
    --artifacts-destination "$MLFLOW_ARTIFACTS" "$@"
