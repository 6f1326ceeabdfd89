#!/usr/bin/env bash
# The attack suite (docs/security.md): every probe a hostile node or network peer can make,
# against both profiles, with the real binaries and services. Prints one line per probe and
# `attack: tried=<n> held=<n>`; exits non-zero unless every probe held. The test command runs
# the same tests as part of the suite; this script runs only them, with their output.
#
#   aggregator/tests/attack.rs        identity, topics, envelopes, API, webhooks, slow and
#                                     oversized requests, token guessing (cluster + embedded)
#   broker/tests/through_broker.rs    forged acks past the broker, Kubernetes tokens of
#                                     other nodes and every bent token, impostors
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
services_up
cargo build --workspace --locked --bins
mkdir -p target
cargo test --locked -p aggregator --test attack -- --nocapture 2>&1 | tee target/attack.log
cargo test --locked -p broker --test through_broker -- \
  an_agent_ignores_acks_beyond_what_it_sent service_account_tokens_admit_only_the_node_they_name \
  a_node_can_touch_only_its_own_topics strangers_and_impostors_are_refused
grep '^attack:' target/attack.log
