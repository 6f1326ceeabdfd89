#!/bin/sh
# A kubectl stand-in for scripts/check-ansible.sh: records every call (arguments, and the
# manifests passed with -f) in /var/log/kubectl-fake.log inside the test root, and answers
# like a cluster where every apply changes something.
log=/var/log/kubectl-fake.log
echo "ARGS $*" >>"$log"
case " $* " in
  *" apply -f - "*)
    cat >>"$log"
    echo >>"$log"
    echo "object/stand-in configured" ;;
  *" apply -f "*)
    for a in "$@"; do last=$a; done
    cat "$last" >>"$log"
    echo "object/stand-in configured" ;;
  *" apply -k "*) echo "object/stand-in configured" ;;
  *" diff "*) echo "diff -u stand-in"; exit 1 ;;
  *" get deployment,statefulset,daemonset "*)
    echo deployment.apps/auditflow-aggregator
    echo daemonset.apps/auditflow-agent ;;
  *" get nodes "*) printf 'test-server' ;;
  *" get secret "*) ;;
  *) ;;
esac
exit 0
