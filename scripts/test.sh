#!/usr/bin/env bash
# prodcat's test command (the README's and CI's): provisions what the tests need (ONNX Runtime,
# base model, Kafka broker), starts the broker, runs every test, stops the broker.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/provision.sh all
bash scripts/provision.sh kafka
# Deployment-test tools (kubernetes-validate, promtool, Prometheus). As root (CI) they are
# installed and the deployment tests fail, not skip, without them; otherwise promtool/Prometheus
# may be missing (Debian's prometheus package needs root) and those tests skip with a message.
if [ "$(id -u)" = 0 ]; then
  bash scripts/provision.sh ops
  export PRODCAT_REQUIRE_TOOLS=1
else
  bash scripts/provision.sh ops || echo "test: deployment tools incomplete; tests/deploy.rs skips what needs them" >&2
fi
export KAFKA_PORT=${KAFKA_PORT:-19092}
bash scripts/kafka-broker.sh start
trap 'bash scripts/kafka-broker.sh stop' EXIT
export PRODCAT_TEST_KAFKA=127.0.0.1:$KAFKA_PORT
# The broker binary, for tests that start a broker of their own behind a fault proxy.
PRODCAT_TANSU=$(bash scripts/kafka-broker.sh binary)
export PRODCAT_TANSU
# Kafka tests fail (not skip) when the broker this script started is missing or unreachable.
export PRODCAT_REQUIRE_KAFKA=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  cargo test --doc --workspace
else
  cargo test --workspace --no-fail-fast "$@"
fi
