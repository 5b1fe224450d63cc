#!/usr/bin/env bash
# Make sure the local servers the registry needs are installed, configured and
# running: PostgreSQL (trust for local roles on 127.0.0.1, max_connections >= 300)
# and RabbitMQ (guest/guest on 127.0.0.1).
#
# Idempotent: a second run changes nothing and restarts nothing.  Prints one line
# per thing it did or found; command output is shown only when something fails.
# Never prompts (stdin is /dev/null).  Used by `make up` and by .ci/run.
#
# Settings (environment):
#   INFRA_PG_MIN_CONNECTIONS   minimum max_connections (default 300)
#   INFRA_PG_WAIT_SECONDS      readiness timeout for PostgreSQL (default 60)
#   INFRA_RABBIT_WAIT_SECONDS  readiness timeout for RabbitMQ (default 90)
set -euo pipefail

exec </dev/null
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH}"
# The caller's libpq settings must not redirect our admin connections.
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGPASSWORD PGSERVICE PGSERVICEFILE PGOPTIONS PGSSLMODE || true

PG_MIN_CONNECTIONS="${INFRA_PG_MIN_CONNECTIONS:-300}"
PG_WAIT_SECONDS="${INFRA_PG_WAIT_SECONDS:-60}"
RABBIT_WAIT_SECONDS="${INFRA_RABBIT_WAIT_SECONDS:-90}"
RABBIT_PORT="${RABBITMQ_NODE_PORT:-5672}"

say() { printf 'infra: %s\n' "$*"; }
die() { printf 'infra: ERROR: %s\n' "$*" >&2; exit 1; }

# run_quiet DESCRIPTION CMD...: run CMD with its output captured; on failure show
# the output and stop.
run_quiet() {
    local what="$1"; shift
    local out
    if ! out="$("$@" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "$what failed: $*"
    fi
}

if [[ "$(id -u)" != 0 ]]; then
    die "must run as root (installs packages, edits /etc/postgresql, starts servers)"
fi

# Serialise concurrent runs (e.g. `make up` from two shells).  The lock is held by
# flock(1) itself (-o: not passed on), so the servers this script starts do not
# inherit it and keep it locked after the script ends.
LOCK_FILE=/tmp/registry-infra.lock
if [[ "${REGISTRY_INFRA_LOCKED:-}" != 1 ]] && command -v flock >/dev/null 2>&1; then
    rc=0
    REGISTRY_INFRA_LOCKED=1 flock -o -E 75 -w 600 "$LOCK_FILE" bash "${BASH_SOURCE[0]}" "$@" || rc=$?
    [[ "$rc" != 75 ]] || die "another scripts/infra.sh has held $LOCK_FILE for 10 minutes"
    exit "$rc"
fi

# ---------------------------------------------------------------- packages
APT_UPDATED=0
apt_install() {
    local pkg="$1" log
    log="$(mktemp /tmp/registry-infra-apt.XXXXXX)"
    if [[ "$APT_UPDATED" == 0 ]]; then
        say "apt-get update"
        if ! apt-get update >"$log" 2>&1; then
            tail -n 40 "$log" >&2; die "apt-get update failed (full log: $log)"
        fi
        APT_UPDATED=1
    fi
    say "installing $pkg (apt-get install -y $pkg)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "$pkg" >"$log" 2>&1; then
        tail -n 40 "$log" >&2; die "apt-get install $pkg failed (full log: $log)"
    fi
    rm -f "$log"
}

pg_server_present() {
    command -v pg_ctlcluster >/dev/null 2>&1 || return 1
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

if ! pg_server_present; then
    apt_install postgresql
    pg_server_present || die "postgresql installed but no server binaries found under /usr/lib/postgresql"
fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt_install rabbitmq-server
    command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server installed but not on PATH"
fi

# ---------------------------------------------------------------- PostgreSQL
PG_VER="$(ls /etc/postgresql 2>/dev/null | grep -E '^[0-9]+(\.[0-9]+)?$' | sort -V | tail -n 1 || true)"
if [[ -z "$PG_VER" || ! -d "/etc/postgresql/$PG_VER/main" ]]; then
    # The package normally creates the cluster; create it if it did not.
    PG_VER="$(ls /usr/lib/postgresql | grep -E '^[0-9]+(\.[0-9]+)?$' | sort -V | tail -n 1)"
    say "postgresql $PG_VER: creating cluster main"
    run_quiet "pg_createcluster" pg_createcluster "$PG_VER" main
fi
PG="postgresql $PG_VER"
PG_CTL=(pg_ctlcluster --skip-systemctl-redirect "$PG_VER" main)

PG_PORT="$(pg_conftool -s "$PG_VER" main show port 2>/dev/null || true)"
PG_PORT="${PG_PORT//[!0-9]/}"
PG_PORT="${PG_PORT:-5432}"

HBA="$(pg_conftool -s "$PG_VER" main show hba_file 2>/dev/null || true)"
HBA="${HBA#\'}"; HBA="${HBA%\'}"
HBA="${HBA:-/etc/postgresql/$PG_VER/main/pg_hba.conf}"
[[ -f "$HBA" ]] || die "$PG: pg_hba.conf not found at $HBA"

pg_log_tail() {
    local log="/var/log/postgresql/postgresql-$PG_VER-main.log"
    [[ -r "$log" ]] && { echo "--- last lines of $log:" >&2; tail -n 30 "$log" >&2; }
    return 0
}

pg_running() { "${PG_CTL[@]}" status >/dev/null 2>&1; }

pg_wait_ready() {
    local tries=$(( PG_WAIT_SECONDS * 2 )) i
    for (( i = 0; i < tries; i++ )); do
        if pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 2 >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    pg_isready -h 127.0.0.1 -p "$PG_PORT" -t 2 >&2 || true
    pg_log_tail
    die "$PG: not accepting connections on 127.0.0.1:$PG_PORT after ${PG_WAIT_SECONDS}s"
}

# pg_sql SQL: run SQL as the postgres superuser, printing unaligned tuples only.
# Tries TCP on 127.0.0.1 first (works once trust is in place), then peer auth on
# the socket as the postgres OS user (what a fresh Debian install allows).
pg_sql() {
    local sql="$1"
    psql -X -w -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
        -c "$sql" 2>/dev/null && return 0
    ( cd / && runuser -u postgres -- psql -X -w -q -At -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres -c "$sql" )
}

if pg_running; then
    pg_state="running"
else
    say "$PG: not running, starting (pg_ctlcluster --skip-systemctl-redirect $PG_VER main start)"
    if ! out="$("${PG_CTL[@]}" start 2>&1)"; then
        printf '%s\n' "$out" >&2
        pg_log_tail
        die "$PG: could not start"
    fi
    pg_state="started"
fi
pg_wait_ready

# pg_hba.conf: the first rules must let local roles in without a password.
WANT_HBA=(
    "local all all trust"
    "host all all 127.0.0.1/32 trust"
    "host all all ::1/128 trust"
)
# The leading run of non-comment rules that are already among the wanted ones.
mapfile -t hba_head < <(
    awk '
        { sub(/#.*/, "") }            # strip comments
        NF == 0 { next }              # skip blank lines
        { $1 = $1 }                   # squeeze whitespace
        $0 == "local all all trust" || $0 == "host all all 127.0.0.1/32 trust" ||
            $0 == "host all all ::1/128 trust" { print; next }
        { exit }
    ' "$HBA"
)
missing_hba=()
for rule in "${WANT_HBA[@]}"; do
    found=0
    for have in "${hba_head[@]+"${hba_head[@]}"}"; do
        [[ "$have" == "$rule" ]] && { found=1; break; }
    done
    [[ "$found" == 1 ]] || missing_hba+=("$rule")
done
if (( ${#missing_hba[@]} > 0 )); then
    [[ -e "$HBA.before-registry" ]] || cp -p "$HBA" "$HBA.before-registry"
    tmp="$(mktemp "$HBA.XXXXXX")"
    {
        echo "# Added by the registry's scripts/infra.sh: local roles need no password."
        for rule in "${missing_hba[@]}"; do
            read -r -a f <<<"$rule"
            if [[ "${f[0]}" == local ]]; then
                printf '%-7s %-15s %-15s %-23s %s\n' "${f[0]}" "${f[1]}" "${f[2]}" "" "${f[3]}"
            else
                printf '%-7s %-15s %-15s %-23s %s\n' "${f[0]}" "${f[1]}" "${f[2]}" "${f[3]}" "${f[4]}"
            fi
        done
        cat "$HBA"
    } >"$tmp"
    cat "$tmp" >"$HBA"   # keeps the file's owner and mode
    rm -f "$tmp"
    run_quiet "$PG: reload" "${PG_CTL[@]}" reload
    # A reload is asynchronous: wait until a password-less TCP login works.
    ok=0
    for (( i = 0; i < PG_WAIT_SECONDS * 2; i++ )); do
        if psql -X -w -q -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; then
            ok=1; break
        fi
        sleep 0.5
    done
    [[ "$ok" == 1 ]] || { pg_log_tail; die "$PG: 127.0.0.1 still refuses postgres without a password after editing $HBA"; }
    joined="$(printf '%s; ' "${missing_hba[@]}")"
    say "$PG: pg_hba.conf: inserted at top: ${joined%; } (reloaded)"
fi

max_conn="$(pg_sql 'show max_connections')" || die "$PG: cannot query max_connections as postgres"
max_conn="${max_conn//[!0-9]/}"
[[ -n "$max_conn" ]] || die "$PG: could not read max_connections"
if (( max_conn < PG_MIN_CONNECTIONS )); then
    say "$PG: max_connections=$max_conn < $PG_MIN_CONNECTIONS, ALTER SYSTEM SET max_connections = $PG_MIN_CONNECTIONS and restarting"
    pg_sql "ALTER SYSTEM SET max_connections = $PG_MIN_CONNECTIONS" >/dev/null \
        || die "$PG: ALTER SYSTEM SET max_connections failed"
    if ! out="$("${PG_CTL[@]}" restart 2>&1)"; then
        printf '%s\n' "$out" >&2
        pg_log_tail
        die "$PG: restart with max_connections=$PG_MIN_CONNECTIONS failed"
    fi
    pg_wait_ready
    max_conn="$(pg_sql 'show max_connections')" || die "$PG: cannot query max_connections after restart"
    max_conn="${max_conn//[!0-9]/}"
    if (( max_conn < PG_MIN_CONNECTIONS )); then
        die "$PG: max_connections is still $max_conn after restart (set elsewhere with higher priority? see $PG_VER/main/postgresql.conf, conf.d, command line)"
    fi
fi
psql -X -w -q -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'select 1' >/dev/null 2>&1 \
    || die "$PG: postgres cannot log in on 127.0.0.1:$PG_PORT without a password (check $HBA)"
say "$PG: $pg_state on 127.0.0.1:$PG_PORT, trust for local roles, max_connections=$max_conn"

# ---------------------------------------------------------------- RabbitMQ
rabbit_ping() { timeout 30 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

rabbit_log_tail() {
    local f log_base="${RABBITMQ_LOG_BASE:-/var/log/rabbitmq}"
    for f in /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log \
             "$(ls -t "$log_base"/*.log 2>/dev/null | head -n 1)"; do
        [[ -n "$f" && -s "$f" ]] && { echo "--- last lines of $f:" >&2; tail -n 30 "$f" >&2; }
    done
    return 0
}

if rabbit_ping; then
    rabbit_state="running"
else
    say "rabbitmq: not answering ping, starting (rabbitmq-server -detached)"
    run_quiet "rabbitmq: start" rabbitmq-server -detached
    deadline=$(( SECONDS + RABBIT_WAIT_SECONDS ))
    until rabbit_ping; do
        if (( SECONDS >= deadline )); then
            timeout 30 rabbitmq-diagnostics ping >&2 || true
            rabbit_log_tail
            die "rabbitmq: node not answering ping after ${RABBIT_WAIT_SECONDS}s"
        fi
        sleep 1
    done
    rabbit_state="started"
fi
# The node answers ping before the rabbit application has finished booting.
if ! out="$(timeout $(( RABBIT_WAIT_SECONDS + 10 )) \
        rabbitmqctl -q await_startup --timeout "$RABBIT_WAIT_SECONDS" 2>&1)"; then
    printf '%s\n' "$out" >&2
    rabbit_log_tail
    die "rabbitmq: the rabbit application did not finish booting (rabbitmqctl await_startup)"
fi

if ! timeout 30 rabbitmqctl -q authenticate_user guest guest >/dev/null 2>&1; then
    if timeout 30 rabbitmqctl -q list_users 2>/dev/null | awk '{print $1}' | grep -qx guest; then
        die "rabbitmq: user guest exists but its password is not 'guest'; not changing it"
    fi
    say "rabbitmq: user guest missing, adding guest/guest (administrator, all permissions on /)"
    run_quiet "rabbitmq: add_user" timeout 30 rabbitmqctl -q add_user guest guest
    run_quiet "rabbitmq: set_user_tags" timeout 30 rabbitmqctl -q set_user_tags guest administrator
    run_quiet "rabbitmq: set_permissions" timeout 30 rabbitmqctl -q set_permissions -p / guest '.*' '.*' '.*'
fi
if ! timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RABBIT_PORT" 2>/dev/null; then
    die "rabbitmq: node is up but nothing accepts AMQP connections on 127.0.0.1:$RABBIT_PORT"
fi
rabbit_version="$(timeout 30 rabbitmqctl -q version 2>/dev/null || true)"
say "rabbitmq${rabbit_version:+ $rabbit_version}: $rabbit_state, amqp://guest:guest@127.0.0.1:$RABBIT_PORT/"
