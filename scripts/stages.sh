# The stage runner shared by scripts/test.sh, check-k8s.sh and check-ansible.sh. Sourced;
# the sourcing script defines `summary` (printed when a stage fails, and at its end).
#
#   stage NAME command...   runs the command with errexit off, records its time and status
#                           in STAGES, and on failure prints the summary and exits with it;
#                           with STAGES_KEEP_GOING=1 it records the failure in STAGES_RC (the
#                           first failure's status) and the run goes on.
STAGES=()
STAGES_RC=0
T0=$(date +%s)

stage() { # name command...
  local name=$1 start rc
  shift
  printf '\n==> %s\n' "$name"
  start=$(date +%s)
  set +e
  "$@"
  rc=$?
  set -e
  STAGES+=("$(printf '%-28s %5ss  %s' "$name" "$(($(date +%s) - start))" "$([ $rc = 0 ] && echo ok || echo "FAILED ($rc)")")")
  if [ $rc != 0 ]; then
    [ "$STAGES_RC" != 0 ] || STAGES_RC=$rc
    if [ "${STAGES_KEEP_GOING:-}" != 1 ]; then
      summary
      exit $rc
    fi
  fi
}

# Prints the recorded stages and the total under a heading.
stage_times() { # heading
  printf '\n==> %s\n' "$1"
  printf '%s\n' "${STAGES[@]}"
  printf '%-28s %5ss\n' total "$(($(date +%s) - T0))"
}
