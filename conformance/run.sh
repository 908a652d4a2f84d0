#!/usr/bin/env bash
# Autobahn|Testsuite against rue_trio, in the server role, the client role, or both.
#
#   bash conformance/run.sh [server|client|both] [case-pattern[,case-pattern...]]
#
# server: wstest's fuzzingclient against conformance/echo_server.py;
# client: wstest's fuzzingserver against conformance/client_testee.py.
# Everything listens on 127.0.0.1 only. Reports go to conformance/reports/<role>/
# (gitignored), then summarise.py prints the verdict; the exit status is its own.
# See conformance/README.md for the environment variables.
set -euo pipefail

usage="usage: bash conformance/run.sh [server|client|both] [case-pattern, e.g. '*' or '6.*,7.1.1']"
role=${1:-both}
cases=${2:-*}
case "$role" in
server | client | both) ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
python=${PYTHON:-python3}
cache=${RUE_TRIO_AUTOBAHN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rue_trio-autobahn}
venv=$cache/venv
reports=${CONFORMANCE_REPORTS:-$here/reports}
role_timeout=${CONFORMANCE_TIMEOUT:-3600}
virtualenv_pin="virtualenv==20.15.1"

# Processes this script started; stopped on every way out. Even the ones it waits for
# run in the background, so that a signal reaches the traps below at once.
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

find_python27() {
    if [ -n "${AUTOBAHN_PYTHON:-}" ]; then
        echo "$AUTOBAHN_PYTHON"
        return
    fi
    local candidate
    for candidate in "$(command -v python2.7 || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python; do
        if [ -n "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "no Python 2.7 found: set AUTOBAHN_PYTHON to a python2.7 executable" >&2
    exit 2
}

# The Python 2.7 virtualenv holding wstest, (re)built when requirements-py27.txt changes.
ensure_venv() {
    local requirements=$here/requirements-py27.txt
    if [ -x "$venv/bin/wstest" ] && cmp -s "$requirements" "$venv/requirements-py27.txt"; then
        return
    fi
    local python27
    python27=$(find_python27)
    echo "== creating the Autobahn virtualenv in $venv (Python 2.7: $python27)"
    mkdir -p "$cache"
    rm -rf "$venv"
    if ! {
        if ! "$python27" -m virtualenv --version; then
            "$python27" -m pip install --disable-pip-version-check \
                --target "$cache/virtualenv-tool" "$virtualenv_pin"
        fi &&
            PYTHONPATH=$cache/virtualenv-tool "$python27" -m virtualenv --no-download "$venv" &&
            "$venv/bin/pip" install --disable-pip-version-check -r "$requirements"
    } >"$cache/install.log" 2>&1; then
        tail -n 20 "$cache/install.log" >&2
        echo "installing Autobahn|Testsuite failed: see $cache/install.log" >&2
        exit 2
    fi
    cp "$requirements" "$venv/requirements-py27.txt"
}

# Wait until a background process has written its port to a file; print the port.
wait_port() {
    local file=$1 pid=$2 name=$3
    for _ in $(seq 300); do
        if [ -s "$file" ]; then
            cat "$file"
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before listening" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$name did not listen within 30 s" >&2
    return 1
}

# The wstest spec: mode (fuzzingclient/fuzzingserver), output directory, server URL.
write_spec() {
    SPEC_MODE=$1 SPEC_OUTDIR=$2 SPEC_URL=$3 SPEC_CASES=$cases "$python" - <<'EOF'
import json
import os

cases = [case.strip() for case in os.environ["SPEC_CASES"].split(",") if case.strip()]
spec = {"outdir": os.environ["SPEC_OUTDIR"], "cases": cases, "exclude-cases": [],
        "exclude-agent-cases": {}}
if os.environ["SPEC_MODE"] == "fuzzingclient":
    spec["servers"] = [{"agent": "rue_trio", "url": os.environ["SPEC_URL"]}]
else:
    spec["url"] = os.environ["SPEC_URL"]
print(json.dumps(spec, indent=2))
EOF
}

# Print how long a phase took, and the tails of its logs when it failed.
finish_phase() {
    local status=$1 started=$2 log
    shift 2
    echo "   done in $((SECONDS - started)) s (exit status $status; logs: $*)"
    if [ "$status" -ne 0 ]; then
        for log in "$@"; do
            echo "   -- the end of $log" >&2
            tail -n 20 "$log" >&2 || true
        done
    fi
}

run_server_role() {
    local out=$reports/server started=$SECONDS status=0 port
    rm -rf "$out"
    mkdir -p "$out"
    echo "== server role: wstest fuzzingclient -> rue_trio echo server, cases '$cases'"
    (cd "$root" && PYTHONPATH=$root exec "$python" conformance/echo_server.py "$out/port") \
        >"$out/echo_server.log" 2>&1 &
    pids+=($!)
    if port=$(wait_port "$out/port" "${pids[-1]}" "the echo server"); then
        write_spec fuzzingclient "$out" "ws://127.0.0.1:$port/ws" >"$out/fuzzingclient.json"
        (cd "$out" && exec timeout --kill-after=10 "$role_timeout" \
            "$venv/bin/wstest" -m fuzzingclient -s fuzzingclient.json) >"$out/wstest.log" 2>&1 &
        pids+=($!)
        wait "$!" || status=$?
    else
        status=1
    fi
    cleanup
    finish_phase "$status" "$started" "$out/wstest.log" "$out/echo_server.log"
}

run_client_role() {
    local out=$reports/client started=$SECONDS status=0 port
    rm -rf "$out"
    mkdir -p "$out"
    echo "== client role: rue_trio client -> wstest fuzzingserver, cases '$cases'"
    write_spec fuzzingserver "$out" "ws://127.0.0.1:0" >"$out/fuzzingserver.json"
    (cd "$out" && exec "$venv/bin/python" "$here/wstest_loopback.py" "$out/port" \
        -m fuzzingserver -s fuzzingserver.json -u 0) >"$out/wstest.log" 2>&1 &
    pids+=($!)
    if port=$(wait_port "$out/port" "${pids[-1]}" "the fuzzing server"); then
        (cd "$root" && PYTHONPATH=$root exec timeout --kill-after=10 "$role_timeout" \
            "$python" conformance/client_testee.py "ws://127.0.0.1:$port") \
            >"$out/client_testee.log" 2>&1 &
        pids+=($!)
        wait "$!" || status=$?
    else
        status=1
    fi
    cleanup
    finish_phase "$status" "$started" "$out/client_testee.log" "$out/wstest.log"
}

ensure_venv
mkdir -p "$reports"
reports=$(cd "$reports" && pwd)
started=$SECONDS
summarised=()
if [ "$role" != client ]; then
    run_server_role
    summarised+=("$reports/server")
fi
if [ "$role" != server ]; then
    run_client_role
    summarised+=("$reports/client")
fi
echo "== summary (wall clock $((SECONDS - started)) s)"
"$python" "$here/summarise.py" "${summarised[@]}"
