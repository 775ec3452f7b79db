#!/usr/bin/env bash
# Start Debian's PostgreSQL cluster and create the test role and database (idempotent).
set -euo pipefail
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q "^$ver main"; then
    pg_createcluster "$ver" main >/dev/null
fi
pg_ctlcluster "$ver" main start 2>/dev/null || true
for _ in $(seq 1 50); do
    pg_isready -h 127.0.0.1 -q && break
    sleep 0.2
done
runuser -u postgres -- psql -q -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='funcx') THEN CREATE ROLE funcx LOGIN PASSWORD 'funcx' CREATEDB; END IF; END\$\$;"
runuser -u postgres -- psql -tAq -c "SELECT 1 FROM pg_database WHERE datname='funcx_test'" | grep -q 1 \
    || runuser -u postgres -- createdb -O funcx funcx_test
echo "postgres $ver ready on 127.0.0.1:5432"
