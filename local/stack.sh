#!/usr/bin/env bash
# The whole local stack for `make up` / `make down`: Kafka and Redis via `python -m local`,
# then a stream worker and two producers in the background. Every process gets a pid file
# and a log in .run/, so `down` (from any shell) stops exactly what `up` started.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=.run
PY=.venv/bin/python
KAFKA_PORT=9092
REDIS_PORT=6379
WEB_PORT=6066
PAGE_PORT=8080
mkdir -p "$RUN"

# Pid of a background app if its pid file names a live process, else nothing.
alive() {
    local pidfile="$RUN/$1.pid" pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Start "$@" detached in its own session (so `down` can stop its whole process group).
start_app() {
    local name=$1 pid
    shift
    if pid=$(alive "$name"); then
        echo "$name: already running (pid $pid), log $RUN/$name.log"
        return
    fi
    setsid "$@" >>"$RUN/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
    echo "$name: started (pid $!), log $RUN/$name.log"
}

# SIGTERM the app's process group, wait up to 30 s, then SIGKILL.
stop_app() {
    local name=$1 pid
    if ! pid=$(alive "$name"); then
        echo "$name: not running"
        rm -f "$RUN/$name.pid"
        return
    fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "$name: killed after 30 s (pid $pid)"
    else
        echo "$name: stopped (pid $pid)"
    fi
    rm -f "$RUN/$name.pid"
}

# The FRAUD_REDIS_URL of one Redis user (models.redis_acl): redis_url worker "$REDIS_WORKER_PASSWORD"
redis_url() {
    "$PY" -c 'import sys; from models.redis_acl import redis_url; print(redis_url(sys.argv[1], sys.argv[2], port=int(sys.argv[3])))' "$1" "$2" "$REDIS_PORT"
}

up() {
    # Redis runs as docker compose runs it: one user per role, only the batch job may write
    # batch models, no anonymous access (docs/security.md). The passwords are made once.
    [[ -s "$RUN/redis-passwords" ]] || (umask 077; "$PY" -c 'import secrets; from models.redis_acl import roles; print("\n".join(f"export {r.password_variable}={secrets.token_hex(24)}" for r in roles("fraud")))' > "$RUN/redis-passwords")
    # shellcheck source=/dev/null
    source "$RUN/redis-passwords"
    "$PY" -m local kafka start --port "$KAFKA_PORT" --dir "$RUN/kafka"
    "$PY" -m local redis start --port "$REDIS_PORT" --dir "$RUN/redis" --acl-from-env
    export FRAUD_KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
    local worker_url batch_url page_url
    worker_url=$(redis_url worker "$REDIS_WORKER_PASSWORD")
    batch_url=$(redis_url batch "$REDIS_BATCH_PASSWORD")
    page_url=$(redis_url alerts-page "$REDIS_ALERTS_PAGE_PASSWORD")
    export PYTHONUNBUFFERED=1
    # Batch models are signed; the local stack makes its own key once (never a fixed default).
    if [[ -z "${FRAUD_MODEL_SIGNING_KEY:-}" ]]; then
        [[ -s "$RUN/signing-key" ]] || (umask 077; "$PY" -c "import secrets; print(secrets.token_hex(32))" > "$RUN/signing-key")
        FRAUD_MODEL_SIGNING_KEY="$(cat "$RUN/signing-key")"
        export FRAUD_MODEL_SIGNING_KEY
    fi
    # The alerts page takes verdicts from holders of a token; the local stack makes one.
    if [[ -z "${FRAUD_REVIEW_TOKENS:-}" ]]; then
        [[ -s "$RUN/review-token" ]] || (umask 077; "$PY" -c "import secrets; print(secrets.token_urlsafe(24))" > "$RUN/review-token")
        FRAUD_REVIEW_TOKENS="analyst:$(cat "$RUN/review-token")"
        export FRAUD_REVIEW_TOKENS
    fi
    # --datadir keeps the worker state out of the repository root (faust defaults to ./<app>-data).
    # `python -m stream` creates the topics (labels with one partition) before Faust starts.
    start_app worker env FRAUD_REDIS_URL="$worker_url" "$PY" -m stream --datadir "$RUN/worker-data" worker -l info --web-port "$WEB_PORT"
    # Labels after ~10 s (not the 30 s default) so the demo models learn within a minute.
    start_app producer-transactions "$PY" -m producers transactions --rate 200 --label-delay 10
    start_app producer-emails "$PY" -m producers emails --rate 20 --label-delay 10
    start_app lake-sink env FRAUD_LAKE_DIR="$RUN/lake" "$PY" -m batch sink
    start_app alerts-page env FRAUD_REDIS_URL="$page_url" "$PY" -m stream alerts-page --port "$PAGE_PORT"
    # A crash at import or on bad settings shows within a second or two; say so now rather
    # than print "up" over a dead worker.
    sleep 3
    local failed=0 name
    for name in worker producer-transactions producer-emails lake-sink alerts-page; do
        if ! alive "$name" >/dev/null; then
            failed=1
            echo >&2
            echo "$name exited right after starting; last lines of $RUN/$name.log:" >&2
            tail -n 15 "$RUN/$name.log" >&2
            rm -f "$RUN/$name.pid"
        fi
    done
    if ((failed)); then
        echo >&2
        echo "Local stack is only partly up (see above); make down stops what runs." >&2
        return 1
    fi
    cat <<EOF

Local stack is up.
  logs:     $RUN/*.log   (tail -f $RUN/worker.log)
  alerts:   http://127.0.0.1:$PAGE_PORT/   (reviewer token: $RUN/review-token, unless FRAUD_REVIEW_TOKENS was set)
  metrics:  http://127.0.0.1:$WEB_PORT/metrics
  retrain:  FRAUD_MODEL_SIGNING_KEY=\$(cat $RUN/signing-key) FRAUD_LAKE_DIR=$RUN/lake \\
              FRAUD_KAFKA_BOOTSTRAP=$FRAUD_KAFKA_BOOTSTRAP FRAUD_REDIS_URL='$batch_url' \\
              $PY -m batch retrain --profile-period-s 3600
  redis:    one user per role, passwords in $RUN/redis-passwords (redis-cli --user admin --pass ...)
  stop:     make down
EOF
}

down() {
    # Producers first, then the worker (it commits offsets to Kafka while stopping),
    # then the servers.
    stop_app alerts-page
    stop_app lake-sink
    stop_app producer-emails
    stop_app producer-transactions
    stop_app worker
    "$PY" -m local redis stop
    "$PY" -m local kafka stop
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *)
        echo "usage: $0 up|down" >&2
        exit 2
        ;;
esac
