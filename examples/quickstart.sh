#!/usr/bin/env bash
# Quickstart: the brain with its embedded scheduler on SQLite, firing the
# example Huey application's tasks into a Huey consumer on SQLite storage.
# Needs only Python 3.11+. Stop with Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${Z4J_QUICKSTART_DIR:-$root/.quickstart}
mkdir -p "$work"

if [ ! -x "$root/.venv/bin/python" ]; then
    python3 -m venv "$root/.venv"
fi
"$root/.venv/bin/pip" install --quiet --disable-pip-version-check -e "$root[huey]"
export PATH="$root/.venv/bin:$PATH"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

cd "$work"
export Z4J_DATABASE_URL="sqlite:///$work/z4j.db"
export Z4J_HUEY_URL="sqlite:///$work/huey.db?name=quickstart"
export Z4J_EXAMPLE_OUTPUT="$work/example-runs.jsonl"
export Z4J_EMBEDDED_SCHEDULER=true
export Z4J_SCHEDULER_GRPC_ENABLED=true
export Z4J_SCHEDULER_GRPC_PORT=0

python -m huey.bin.huey_consumer examples.huey_app.tasks.huey \
    --workers=1 --worker-type=thread --no-periodic --max-delay=0.5 &
consumer=$!
brain=
stop() {
    trap - INT TERM EXIT
    kill -TERM ${brain:+"$brain"} "$consumer" 2>/dev/null
    wait
}
trap stop INT TERM EXIT

z4j-brain migrate
z4j-brain project create demo
z4j-brain apply "$root/examples/huey_app/schedules.toml"
echo "An admin API token for http://127.0.0.1:${Z4J_HTTP_PORT:-7700}/api/v1 (shown once):"
z4j-brain token create --role admin --name quickstart
echo "Task runs are appended to $Z4J_EXAMPLE_OUTPUT"

# In the background, so that a SIGTERM to this script reaches the trap,
# which stops the brain (and with it the scheduler child) and the consumer.
z4j-brain serve &
brain=$!
wait "$brain"
