#!/usr/bin/env bash
# Supply-chain check: `cargo deny check` (advisories, bans, licences, sources) against
# deny.toml. cargo-deny is installed under target/tools when missing.
#
# The RustSec advisory database: fetched into target/advisory-dbs when the machine can reach
# GitHub. Machines that cannot (the project's development machines have only the package
# registries) may have an offline snapshot in a folder `shared/advisory-db` beside the
# repository, or wherever ADVISORY_DB_SNAPSHOT points; it is copied into target/advisory-dbs as
# a git repository whose commit time is the newest advisory's date (cargo-deny reads the
# database's age from its HEAD commit), and checked offline. The snapshot is a
# cache, never a requirement: without one, the database is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/target/tools"
export PATH="$TOOLS/bin:$PATH"
DENY_VERSION=0.20.2

if ! [ -x "$TOOLS/bin/cargo-deny" ] || ! "$TOOLS/bin/cargo-deny" --version | grep -q " $DENY_VERSION\$"; then
  # --debug: the unoptimised build compiles in 90 s instead of 230 s on two cores, and still
  # checks this workspace in about 5 s.
  cargo install --locked --quiet --debug --root "$TOOLS" "cargo-deny@$DENY_VERSION"
fi

export AUDITFLOW_ADVISORY_DBS="$ROOT/target/advisory-dbs"
# cargo-deny keeps the default database in <db-path>/advisory-db-<hash of its URL>.
db="$AUDITFLOW_ADVISORY_DBS/advisory-db-3157b0e258782691"
snapshot=${ADVISORY_DB_SNAPSHOT:-$ROOT/../shared/advisory-db}
fetch=()
if [ -d "$snapshot/crates" ]; then
  newest=$(grep -rhoE '^date = "[0-9]{4}-[0-9]{2}-[0-9]{2}"' "$snapshot/crates" | sort | tail -n 1 | grep -oE '[0-9-]{10}')
  stamp="$db/.auditflow-snapshot"
  want="$(cd "$snapshot" && pwd) $newest"
  if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    rm -rf "$db"
    mkdir -p "$db"
    cp -r "$snapshot/." "$db/"
    (
      cd "$db"
      git init -q
      git add -A
      GIT_AUTHOR_DATE="${newest}T00:00:00Z" GIT_COMMITTER_DATE="${newest}T00:00:00Z" \
        git -c user.name=auditflow -c user.email=auditflow@localhost commit -q -m "RustSec snapshot"
    )
    echo "$want" >"$stamp"
  fi
  echo "advisories: offline snapshot $snapshot (newest advisory $newest)"
  fetch=(--offline)
else
  echo "advisories: fetching the RustSec database into $AUDITFLOW_ADVISORY_DBS"
fi

# cargo-deny reads `cargo metadata` for every platform, so every package in Cargo.lock must be
# in the local registry, including those only other platforms build (wasm-bindgen,
# anstyle-wincon, ...), which no build here downloads; offline, a fresh machine's cargo would
# fail on them. The registry is reachable: fetch them first.
cargo fetch --locked --quiet
cargo deny --locked "${fetch[@]}" check --show-stats --hide-inclusion-graph
