#!/usr/bin/env bash
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d), as the
# superuser. For each domain service it makes sure that
#   <svc>_owner  exists (LOGIN) and owns database registry_<svc>; migrations run as it;
#   <svc>_app    exists (LOGIN) and may connect; the owner's migrations grant it the rest.
# Idempotent: a role that exists gets its password set again, a database that exists is kept.
# Passwords: <SVC>_OWNER_PASSWORD / <SVC>_APP_PASSWORD if set, else DB_ROLE_PASSWORD, else "registry".
# Which services: all six (compose: one server), or those in DB_SERVICES (Kubernetes: one server each).
# `python -m registry_common.provision --all` (the compose `migrate` service) repeats the role and
# database part, so this script is the first line, not the only one.
set -euo pipefail

SERVICES=(accounts issuance transfers compliance auctions notifications)
# One server per service (deploy/k8s: postgres-<svc>): DB_SERVICES names the services this server holds.
if [[ -n "${DB_SERVICES:-}" ]]; then read -r -a SERVICES <<<"$DB_SERVICES"; fi
DEFAULT_PASSWORD="${DB_ROLE_PASSWORD:-registry}"

password_for() {  # password_for accounts owner -> $ACCOUNTS_OWNER_PASSWORD or the default
    local var
    var="$(echo "${1}_${2}_PASSWORD" | tr '[:lower:]' '[:upper:]')"
    printf '%s' "${!var:-$DEFAULT_PASSWORD}"
}

psql_admin() {
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
        --dbname "${POSTGRES_DB:-postgres}" "$@"
}

for svc in "${SERVICES[@]}"; do
    for kind in owner app; do
        # Values go in as psql variables (:'name' quotes them), never spliced into SQL text.
        psql_admin -v role="${svc}_${kind}" -v password="$(password_for "$svc" "$kind")" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE', :'role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')
\gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'role', :'password')
\gexec
SQL
    done

    # CREATE DATABASE cannot run inside a transaction block or a DO body: \gexec runs it alone.
    psql_admin -v db="registry_${svc}" -v owner="${svc}_owner" -v app="${svc}_app" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')
\gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'owner')
\gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db')
\gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', :'db', :'app')
\gexec
SQL
    echo "01-roles-and-databases: registry_${svc} (owner ${svc}_owner, app ${svc}_app) ready"
done
