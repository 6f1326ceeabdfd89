#!/usr/bin/env bash
# Checks the Ansible playbooks in ansible/: ansible-lint (production profile) and a syntax
# check; then real applies to throwaway Debian roots of both releases the roles support (12
# bookworm and 13 trixie) through Ansible's chroot connection: node_prep and auditflow_agent,
# checked file by file; the k3s roles on the same roots in check mode and for real (the k3s
# download replaced by a local stand-in file, no network); all of it again, which must change
# nothing; k3s with a wrong sha256, which must be refused; and auditflow_platform and
# ci_runner against a recording kubectl and a fake runner API on 127.0.0.1. Prints which
# release each host runs and how long each step took.
#
# Needs root (chroot, debootstrap). Installs what is missing: python3-venv, debootstrap and
# zstd from Debian; ansible and ansible-lint (pinned in ansible/requirements.txt) into
# target/tools/ansible-venv. On Debian 12 a trixie root needs the point-release debootstrap
# and keyring (upgraded when older, see tools()). Each release's root is made once with
# debootstrap and kept as target/tools/debian-<suite>-root-*.tar.zst; later runs unpack it.
# Scratch files and logs go to target/ansible-test/ (recreated each run).
#
#   scripts/check-ansible.sh
#   AUDITFLOW_AGENT_BIN=path/to/auditflow-agent scripts/check-ansible.sh
#   DEBIAN_MIRROR=http://deb.debian.org/debian scripts/check-ansible.sh
#   CHECK_ANSIBLE_SUITES="outside=bookworm" scripts/check-ansible.sh   another host-to-release mapping
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/target/tools"
VENV="$TOOLS/ansible-venv"
WORK="$ROOT/target/ansible-test"
AGENT_BIN=${AUDITFLOW_AGENT_BIN:-$ROOT/target/debug/auditflow-agent}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the throwaway root holds beyond minbase: Ansible's Python (with python3-apt for the apt
# module), systemd for systemctl and unit checks, and node_prep's packages so that the apply
# needs no download.
ROOT_PACKAGES=python3,python3-apt,systemd,systemd-timesyncd,ca-certificates
# The three test hosts: a k3s server and a k3s agent (Raspberry Pi-like roots), and a host
# outside Kubernetes that runs the AuditFlow agent under systemd.
HOSTS=(server worker outside)
# The Debian release of each host's root. Both supported releases are applied to in every run
# at no extra cost, since the hosts run side by side: the server on bookworm (node_prep's k3s
# part, k3s_server, auditflow_platform, ci_runner), the worker and the outside host on trixie
# (node_prep's k3s part again, k3s_agent, auditflow_agent). CHECK_ANSIBLE_SUITES changes it,
# e.g. "outside=bookworm" to apply auditflow_agent to bookworm.
declare -A SUITE=([server]=bookworm [worker]=trixie [outside]=trixie)
for pair in ${CHECK_ANSIBLE_SUITES:-}; do
  if ! [[ $pair =~ ^(server|worker|outside)=(bookworm|trixie)$ ]]; then
    echo "check-ansible: CHECK_ANSIBLE_SUITES: '$pair' is not HOST=SUITE (hosts ${HOSTS[*]}; suites bookworm, trixie)" >&2
    exit 1
  fi
  SUITE[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done
# root_cache SUITE: the cached root of one release. Its name changes with what goes into it
# (bump the recipe number when build_root changes).
root_cache() {
  echo "$TOOLS/debian-$1-root-$(printf 'recipe 2 %s %s' "$ROOT_PACKAGES" "$MIRROR" | sha256sum | cut -c1-12).tar.zst"
}

if [ "$(id -u)" != 0 ]; then
  echo "check-ansible: needs root (chroot and debootstrap)" >&2
  exit 1
fi
if ! [ -x "$AGENT_BIN" ]; then
  echo "check-ansible: no agent binary at $AGENT_BIN (cargo build -p agent, or set AUDITFLOW_AGENT_BIN)" >&2
  exit 1
fi

# shellcheck source=scripts/stages.sh
source "$ROOT/scripts/stages.sh"
PASSED=0
FAILED=0
CLEANUP_PID=""
summary() {
  if [ -n "$CLEANUP_PID" ]; then wait "$CLEANUP_PID" || true; fi
  stage_times "step times"
  printf 'ansible: %d passed, %d failed\n' "$PASSED" "$FAILED"
  # The hosts' roots (~900 MB) are only worth keeping to look into a failure; the logs stay.
  if [ "$FAILED" = 0 ] && [ "$STAGES_RC" = 0 ]; then
    rm -rf "${HOSTS[@]/#/$WORK/}"
  fi
}
# check DESCRIPTION command...: one named assertion. A failure is reported and counted, and
# the step fails at its end.
check() {
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then
    PASSED=$((PASSED + 1))
  else
    FAILED=$((FAILED + 1))
    echo "FAILED: $what"
    STEP_FAILED=1
  fi
}
# mode_is ROOTFS PATH MODE OWNER GROUP: permissions and ownership, names resolved in the root.
mode_is() {
  [ "$(chroot "$1" stat -c '%a %U %G' "$2")" = "$3 $4 $5" ]
}
# has ROOTFS PATH LINE: the file has this exact line.
has() {
  grep -qxF -- "$3" "$1$2"
}
# lacks FILE TEXT: the file does not contain the text.
lacks() {
  ! grep -qF -- "$2" "$1"
}

# Each step below runs with errexit off (stage() collects its status), so commands whose
# failure must end the step say so with `|| return 1`.

# --- tools --------------------------------------------------------------------------------------
# at_least PACKAGE VERSION: the installed Debian package is at least that version.
at_least() {
  local have
  have=$(dpkg-query -W -f '${Version}' "$1" 2>/dev/null) && dpkg --compare-versions "$have" ge "$2"
}
tools() {
  local missing=()
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  command -v zstd >/dev/null || missing+=(zstd)
  # A trixie root made on Debian 12 needs its point-release debootstrap (1.0.128+nmu2+deb12u2,
  # which no longer pulls usr-is-merged into trixie) and keyring (2023.3+deb12u2, the first
  # with trixie's release keys); older ones are upgraded. Later Debian releases have newer ones.
  if printf '%s\n' "${SUITE[@]}" | grep -qx trixie; then
    at_least debootstrap 1.0.128+nmu2+deb12u2 || missing+=(debootstrap)
    at_least debian-archive-keyring 2023.3+deb12u2 || missing+=(debian-archive-keyring)
  else
    command -v debootstrap >/dev/null || missing+=(debootstrap)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing or upgrading ${missing[*]}"
    apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || return 1
  fi
  # The venv is rebuilt when the pins change (a stamp holds the requirements' sha256).
  local want have=""
  want=$(sha256sum ansible/requirements.txt | cut -d' ' -f1)
  [ -f "$VENV/.requirements-sha256" ] && have=$(cat "$VENV/.requirements-sha256")
  if [ "$want" != "$have" ] || ! [ -x "$VENV/bin/ansible-playbook" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" || return 1
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r ansible/requirements.txt || return 1
    echo "$want" >"$VENV/.requirements-sha256"
  fi
  export PATH="$VENV/bin:$PATH"
  # The chroot connection comes with the pinned ansible package (community.general).
  if ! ansible-doc -t connection community.general.chroot >/dev/null 2>&1; then
    echo "community.general.chroot is missing from the pinned ansible package" >&2
    return 1
  fi
  ansible --version | head -n 1
  NO_COLOR=1 ansible-lint --nocolor --version 2>/dev/null | head -n 1
}

# --- static checks ------------------------------------------------------------------------------
lint() {
  (cd ansible && ANSIBLE_NOCOLOR=1 ansible-lint --offline --profile production --strict --nocolor)
}

syntax() {
  (cd ansible && ansible-playbook --syntax-check -i inventory/example/hosts.yml site.yml)
}

# --- the throwaway Debian roots -----------------------------------------------------------------
# build_root SUITE: debootstrap of one release, kept as its cache. Output in
# target/tools/debootstrap-SUITE.log.
build_root() {
  local suite=$1 cache build="$TOOLS/debian-root-build-$1" log="$TOOLS/debootstrap-$1.log"
  cache=$(root_cache "$suite")
  rm -rf "$build"
  debootstrap --variant=minbase --include="$ROOT_PACKAGES" "$suite" "$build" "$MIRROR" >"$log" 2>&1 ||
    return 1
  # Smaller and faster to unpack: no downloaded packages, documentation or translations.
  chroot "$build" apt-get clean >>"$log" 2>&1 || return 1
  rm -rf "$build"/usr/share/doc/* "$build"/usr/share/man/* "$build"/usr/share/locale/*
  tar -C "$build" --zstd -cf "$cache.tmp" . || return 1
  mv "$cache.tmp" "$cache"
  rm -rf "$build"
  # Roots of this release made by an older recipe are not used any more.
  find "$TOOLS" -maxdepth 1 -name "debian-$suite-root-*.tar.zst" ! -path "$cache" -delete
}

rootfs() {
  local suites suite host r pids=() building=() i rc=0
  suites=$(printf '%s\n' "${SUITE[@]}" | sort -u)
  # A missing root per release; two are made side by side (downloads overlap unpacking).
  for suite in $suites; do
    [ -f "$(root_cache "$suite")" ] && continue
    echo "debootstrap $suite (minbase + $ROOT_PACKAGES) from $MIRROR"
    build_root "$suite" &
    pids+=($!)
    building+=("$suite")
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      tail -n 30 "$TOOLS/debootstrap-${building[$i]}.log"
      echo "debootstrap ${building[$i]} failed (full output: $TOOLS/debootstrap-${building[$i]}.log)"
      rc=1
    fi
  done
  [ $rc = 0 ] || return 1
  for suite in $suites; do
    echo "root file system: $(root_cache "$suite") ($(du -h "$(root_cache "$suite")" | cut -f1))"
  done
  # The last run's roots are deleted in the background (that can take long on a busy disk);
  # summary waits for it.
  if [ -e "$WORK" ]; then
    mv "$WORK" "$WORK.old.$$"
  fi
  rm -rf "$WORK".old.* &
  CLEANUP_PID=$!
  mkdir -p "$WORK/cache"
  # The agent as it is now: a build finishing during the run would otherwise be installed by
  # the second run, which must change nothing.
  cp "$AGENT_BIN" "$WORK/auditflow-agent" || return 1
  AGENT_BIN=$WORK/auditflow-agent
  for host in "${HOSTS[@]}"; do
    r="$WORK/$host"
    mkdir -p "$r"
    tar -C "$r" --zstd -xf "$(root_cache "${SUITE[$host]}")" || return 1
    printf '%s\n' 'proc            /proc           proc    defaults          0       0' \
      '/var/swap       none            swap    sw                0       0' >"$r/etc/fstab"
  done
  # What a Raspberry Pi OS root has and node_prep edits: the kernel command line on the
  # firmware partition and, up to Raspberry Pi OS 12 (bookworm), the dphys-swapfile unit
  # (Raspberry Pi OS 13 has rpi-swap instead, whose generated swap units hang off swap.target).
  for host in server worker; do
    r="$WORK/$host"
    mkdir -p "$r/boot/firmware"
    echo 'console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait' \
      >"$r/boot/firmware/cmdline.txt"
    if [ "${SUITE[$host]}" = bookworm ]; then
      printf '[Unit]\nDescription=stand-in for dphys-swapfile\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n' \
        >"$r/lib/systemd/system/dphys-swapfile.service"
    fi
  done
  # Which release each host runs, as its root says, with the Python and systemd the roles meet.
  local codename python systemd
  for host in "${HOSTS[@]}"; do
    r="$WORK/$host"
    codename=$(sed -n 's/^VERSION_CODENAME=//p' "$r/etc/os-release")
    if [ "$codename" != "${SUITE[$host]}" ]; then
      echo "$host: the root is '$codename', not ${SUITE[$host]}"
      return 1
    fi
    python=$(chroot "$r" python3 -c 'import platform; print(platform.python_version())') || return 1
    systemd=$(chroot "$r" systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
    printf '%-8s Debian %s (%s), Python %s, systemd %s\n' "$host:" "$(cat "$r/etc/debian_version")" \
      "$codename" "$python" "$systemd"
  done

  # A stand-in for the k3s release binary, and its sha256: the roles verify and install it
  # exactly as they would the real one.
  printf '#!/bin/sh\necho "k3s stand-in for scripts/check-ansible.sh"\n' >"$WORK/k3s-standin"
  K3S_SHA256=$(sha256sum "$WORK/k3s-standin" | cut -d' ' -f1)
  K3S_TOKEN=$(head -c 32 /dev/urandom | sha256sum | cut -d' ' -f1)

  cat >"$WORK/inventory.yml" <<INVENTORY
all:
  vars:
    ansible_connection: community.general.chroot
    ansible_python_interpreter: /usr/bin/python3
    # The chroot connection is already root; there is no sudo in the roots.
    ansible_become: false
  children:
    k3s_cluster:
      children:
        k3s_servers:
          hosts:
            server:
              ansible_host: $WORK/server
        k3s_agents:
          hosts:
            worker:
              ansible_host: $WORK/worker
    auditflow_agents:
      hosts:
        outside:
          ansible_host: $WORK/outside
INVENTORY
}

# play LOG ARGS...: ansible-playbook site.yml against the roots; output in $WORK/LOG.
play() {
  local log=$1
  shift
  (cd ansible && ANSIBLE_NOCOLOR=1 ansible-playbook -i "$WORK/inventory.yml" site.yml \
    -e @tests/chroot-vars.yml \
    -e "auditflow_agent_binary_src=$AGENT_BIN" \
    -e "k3s_binary_url=file://$WORK/k3s-standin" \
    -e "k3s_binary_sha256=$K3S_SHA256" \
    -e "k3s_binary_cache_dir=$WORK/cache" \
    -e "k3s_cluster_token=$K3S_TOKEN" \
    "$@") >"$WORK/$log" 2>&1
}
# recap LOG HOST: the PLAY RECAP counters of one host.
recap() {
  grep -E "^$2 +:" "$WORK/$1" | tail -n 1 | tr -s ' '
}
# unchanged LOG HOST: the host's recap says changed=0.
unchanged() {
  grep -qE "^$2 +:.* changed=0 " "$WORK/$1"
}
show_failure() {
  tail -n 40 "$WORK/$1"
  echo "(full output: $WORK/$1)"
}

# --- node_prep + auditflow_agent, applied for real ---------------------------------------------
apply_nodes() {
  if ! play apply-nodes.log --tags node,agent; then
    show_failure apply-nodes.log
    return 1
  fi
  local host
  for host in "${HOSTS[@]}"; do echo "first run:  $(recap apply-nodes.log "$host")"; done
  local s o="$WORK/outside" unit=/etc/systemd/system/auditflow-agent.service
  STEP_FAILED=0
  # node_prep on the k3s nodes (Raspberry Pis), one of each release by default.
  for host in server worker; do
    s="$WORK/$host"
    check "$host: hostname written" has "$s" /etc/hostname auditflow-test
    check "$host: hosts entry" has "$s" /etc/hosts "$(printf '127.0.1.1\tauditflow-test')"
    check "$host: cgroup flags added once" grep -qE '^console=serial0.* rootwait cgroup_memory=1 cgroup_enable=memory$' "$s/boot/firmware/cmdline.txt"
    check "$host: cmdline still one line" test "$(wc -l <"$s/boot/firmware/cmdline.txt")" = 1
    check "$host: fstab swap commented out" has "$s" /etc/fstab '# /var/swap       none            swap    sw                0       0'
    check "$host: fstab other lines kept" grep -q '^proc ' "$s/etc/fstab"
    check "$host: swap.target masked" test "$(readlink "$s/etc/systemd/system/swap.target")" = /dev/null
    if [ "${SUITE[$host]}" = bookworm ]; then
      check "$host: dphys-swapfile masked" test "$(readlink "$s/etc/systemd/system/dphys-swapfile.service")" = /dev/null
    else
      check "$host: no dphys-swapfile, nothing masked for it" test ! -e "$s/etc/systemd/system/dphys-swapfile.service"
    fi
    check "$host: timesyncd servers" grep -q '^NTP=0.debian.pool.ntp.org ' "$s/etc/systemd/timesyncd.conf.d/auditflow.conf"
    check "$host: timesyncd enabled" test -L "$s/etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service"
    check "$host: kernel settings for k3s" has "$s" /etc/sysctl.d/90-auditflow-k3s.conf 'vm.overcommit_memory = 1'
    check "$host: DaemonSet spool owned by uid 10001" test "$(stat -c '%a %u %g' "$s/var/lib/auditflow/spool")" = '750 10001 10001'
  done
  # node_prep on a host outside Kubernetes: the Kubernetes part is left out.
  check "outside: swap left alone" has "$o" /etc/fstab '/var/swap       none            swap    sw                0       0'
  check "outside: no k3s kernel settings" test ! -e "$o/etc/sysctl.d/90-auditflow-k3s.conf"
  check "outside: time sync configured" test -f "$o/etc/systemd/timesyncd.conf.d/auditflow.conf"
  # auditflow_agent: binary, account, folders, files and their permissions.
  check "agent binary installed" cmp -s "$AGENT_BIN" "$o/usr/local/bin/auditflow-agent"
  check "agent binary 0755 root" mode_is "$o" /usr/local/bin/auditflow-agent 755 root root
  check "service account has no shell" test "$(chroot "$o" getent passwd auditflow | cut -d: -f7)" = /usr/sbin/nologin
  check "config folder 0750 root:auditflow" mode_is "$o" /etc/auditflow 750 root auditflow
  check "config 0640 root:auditflow" mode_is "$o" /etc/auditflow/agent.toml 640 root auditflow
  check "credentials 0600 root:root" mode_is "$o" /etc/auditflow/agent.env 600 root root
  check "spool 0750 auditflow" mode_is "$o" /var/lib/auditflow/spool 750 auditflow auditflow
  check "unit 0644 root" mode_is "$o" "$unit" 644 root root
  check "config node id" has "$o" /etc/auditflow/agent.toml 'node_id = "test-node"'
  check "config filter rules" test "$(grep -c '^\[\[filter\]\]$' "$o/etc/auditflow/agent.toml")" = 2
  # The host's own MQTT password, generated on the controller beside the inventory.
  local pw_dir="$WORK/.auditflow-mqtt-passwords" pw
  pw=$(cat "$pw_dir/outside" 2>/dev/null || true)
  check "own password generated on the controller (40 letters and digits)" grep -qxE '[A-Za-z0-9]{40}' "$pw_dir/outside"
  check "controller's password folder 0700, file 0600" test "$(stat -c '%a' "$pw_dir" "$pw_dir/outside" | tr '\n' ' ')" = '700 600 '
  check "config holds no secret" lacks "$o/etc/auditflow/agent.toml" "${pw:-no-password}"
  check "password in the credentials file" has "$o" /etc/auditflow/agent.env "AUDITFLOW_MQTT_PASSWORD=${pw:-no-password}"
  check "no secret in the output" lacks "$WORK/apply-nodes.log" "${pw:-no-password}"
  check "config valid for the agent" chroot "$o" /usr/local/bin/auditflow-agent check-config --config /etc/auditflow/agent.toml
  # The sources, as the role's defaults switch them on.
  check "config sources: journal, dpkg and files on, auth and k8s_audit off" "$VENV/bin/python" -c '
import sys, tomllib
s = tomllib.load(open(sys.argv[1], "rb"))["sources"]
assert s["journal"] == {"enabled": True, "start_at": "end"}, s["journal"]
assert s["auth"] == {"enabled": False, "path": "/var/log/auth.log", "start_at": "end"}, s["auth"]
assert s["dpkg"] == {"enabled": True, "path": "/var/log/dpkg.log", "start_at": "end"}, s["dpkg"]
assert s["k8s_audit"]["enabled"] is False, s["k8s_audit"]
f = s["files"]
assert f["enabled"] is True and f["sweep_interval_s"] == 300, f
assert f["paths"] == ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/sudoers", "/etc/sudoers.d",
                      "/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d", "/root/.ssh/authorized_keys"], f
' "$o/etc/auditflow/agent.toml"
  # The broker's CA (chroot-vars.yml sets one).
  check "CA certificate 0644 root" mode_is "$o" /etc/auditflow/mqtt-ca.pem 644 root root
  check "CA certificate written" has "$o" /etc/auditflow/mqtt-ca.pem '-----BEGIN CERTIFICATE-----'
  check "config points at the CA" has "$o" /etc/auditflow/agent.toml 'mqtt_ca_file = "/etc/auditflow/mqtt-ca.pem"'
  local line
  # With the files source on: CAP_DAC_READ_SEARCH and nothing else, homes read-only (it
  # watches /root/.ssh/authorized_keys).
  for line in 'User=auditflow' 'Group=auditflow' 'SupplementaryGroups=adm' \
    'EnvironmentFile=/etc/auditflow/agent.env' \
    'ExecStart=/usr/local/bin/auditflow-agent --config /etc/auditflow/agent.toml run' \
    'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ProtectHome=read-only' 'PrivateTmp=yes' \
    'ReadWritePaths=/var/lib/auditflow/spool' 'CapabilityBoundingSet=CAP_DAC_READ_SEARCH' \
    'AmbientCapabilities=CAP_DAC_READ_SEARCH' 'SystemCallFilter=~@privileged @resources' \
    'RestartPreventExitStatus=64' 'WantedBy=multi-user.target'; do
    check "unit: $line" has "$o" "$unit" "$line"
  done
  check "unit: one capability setting each" test "$(grep -cE '^(CapabilityBoundingSet|AmbientCapabilities)=' "$o$unit")" = 2
  check "unit passes systemd-analyze verify" chroot "$o" systemd-analyze verify "$unit"
  check "agent enabled at boot" test -L "$o/etc/systemd/system/multi-user.target.wants/auditflow-agent.service"
  return "$STEP_FAILED"
}

# A configuration the agent rejects (exit 64 from check-config) must fail the run and leave
# the installed file alone.
bad_config() {
  local before after
  before=$(sha256sum "$WORK/outside/etc/auditflow/agent.toml")
  STEP_FAILED=0
  if play bad-config.log --tags agent -e auditflow_agent_batch_max_events=0; then
    check "invalid config refused" false
  else
    check "invalid config refused" true
  fi
  check "refusal names the problem" grep -q 'batch.max_events: must be between 1 and 4096' "$WORK/bad-config.log"
  after=$(sha256sum "$WORK/outside/etc/auditflow/agent.toml")
  check "installed config untouched" test "$before" = "$after"
  return "$STEP_FAILED"
}

# The files source off and no CA, in check mode (the outside root keeps what apply-nodes
# installed, for the idempotence step): the unit would go back to no capabilities at all and
# ProtectHome=yes, and the CA file would be removed.
agent_without_files() {
  local unit=/etc/systemd/system/auditflow-agent.service before after
  before=$(sha256sum "$WORK/outside$unit" "$WORK/outside/etc/auditflow/agent.toml")
  if ! play agent-without-files.log --tags agent --limit outside --check --diff \
    -e auditflow_agent_source_files=false -e auditflow_agent_mqtt_ca_pem=; then
    show_failure agent-without-files.log
    return 1
  fi
  local log="$WORK/agent-without-files.log"
  STEP_FAILED=0
  check "files off: config would disable it" grep -qx -- '+enabled = false' "$log"
  check "files off: no capability bounding set" grep -qx -- '+CapabilityBoundingSet=' "$log"
  check "files off: no ambient capabilities" grep -qx -- '+AmbientCapabilities=' "$log"
  check "files off: CAP_DAC_READ_SEARCH dropped" grep -qx -- '-AmbientCapabilities=CAP_DAC_READ_SEARCH' "$log"
  check "files off: homes hidden again" grep -qx -- '+ProtectHome=yes' "$log"
  check "no CA: config has no mqtt_ca_file" grep -qx -- '-mqtt_ca_file = "/etc/auditflow/mqtt-ca.pem"' "$log"
  check "no CA: the file would be removed" bash -c "sed -n '/Remove a CA certificate no longer configured/,/^TASK/p' '$log' | grep -q '^changed: \[outside\]'"
  after=$(sha256sum "$WORK/outside$unit" "$WORK/outside/etc/auditflow/agent.toml")
  check "check mode changed nothing" test "$before" = "$after"
  return "$STEP_FAILED"
}

# --- k3s_server (server) and k3s_agent (worker), on the roots node_prep prepared ---------------
k3s_check_mode() {
  if ! play k3s-check.log --tags k3s --check --diff; then
    show_failure k3s-check.log
    return 1
  fi
  echo "check mode: $(recap k3s-check.log server)"
  echo "            $(recap k3s-check.log worker)"
  STEP_FAILED=0
  check "check mode changed nothing on the server" test ! -e "$WORK/server/usr/local/bin/k3s"
  check "check mode changed nothing on the worker" test ! -e "$WORK/worker/etc/rancher/k3s/config.yaml"
  check "check mode verified the download" test -f "$WORK/cache/k3s-amd64-${K3S_SHA256:0:16}"
  check "check mode shows no token" lacks "$WORK/k3s-check.log" "$K3S_TOKEN"
  return "$STEP_FAILED"
}

k3s_apply() {
  if ! play k3s-apply.log --tags k3s; then
    show_failure k3s-apply.log
    return 1
  fi
  echo "first run:  $(recap k3s-apply.log server)"
  echo "            $(recap k3s-apply.log worker)"
  local a="$WORK/server" b="$WORK/worker" host r
  STEP_FAILED=0
  check "no token in the output" lacks "$WORK/k3s-apply.log" "$K3S_TOKEN"
  for host in server worker; do
    r="$WORK/$host"
    check "$host: k3s binary is the verified file" cmp -s "$WORK/k3s-standin" "$r/usr/local/bin/k3s"
    check "$host: k3s binary 0755 root" mode_is "$r" /usr/local/bin/k3s 755 root root
    check "$host: kubectl links to k3s" test "$(readlink "$r/usr/local/bin/kubectl")" = /usr/local/bin/k3s
    check "$host: k3s config 0600" mode_is "$r" /etc/rancher/k3s/config.yaml 600 root root
  done
  check "server token 0600" mode_is "$a" /etc/rancher/k3s/cluster-token 600 root root
  check "server token content" has "$a" /etc/rancher/k3s/cluster-token "$K3S_TOKEN"
  check "server config points at the token file" has "$a" /etc/rancher/k3s/config.yaml 'token-file: /etc/rancher/k3s/cluster-token'
  check "server config holds no token" lacks "$a/etc/rancher/k3s/config.yaml" "$K3S_TOKEN"
  check "server audit log wired" has "$a" /etc/rancher/k3s/config.yaml '- audit-log-path=/var/lib/rancher/k3s/server/logs/audit.log'
  check "server audit policy 0600" mode_is "$a" /etc/rancher/k3s/audit-policy.yaml 600 root root
  check "audit log readable by group adm" mode_is "$a" /var/lib/rancher/k3s/server/logs/audit.log 640 root adm
  check "server unit" has "$a" /etc/systemd/system/k3s.service 'ExecStart=/usr/local/bin/k3s server'
  check "server unit passes systemd-analyze verify" chroot "$a" systemd-analyze verify /etc/systemd/system/k3s.service
  check "server enabled at boot" test -L "$a/etc/systemd/system/multi-user.target.wants/k3s.service"
  check "worker token 0600" mode_is "$b" /etc/rancher/k3s/agent-join-token 600 root root
  check "worker joins the server" has "$b" /etc/rancher/k3s/config.yaml 'server: https://k3s.test.invalid:6443'
  check "worker unit" has "$b" /etc/systemd/system/k3s-agent.service 'ExecStart=/usr/local/bin/k3s agent'
  check "worker unit passes systemd-analyze verify" chroot "$b" systemd-analyze verify /etc/systemd/system/k3s-agent.service
  check "worker enabled at boot" test -L "$b/etc/systemd/system/multi-user.target.wants/k3s-agent.service"
  return "$STEP_FAILED"
}

# Everything applied so far, run again: nothing may change (and the roles must not undo each
# other's work).
reapply_all() {
  if ! play reapply.log --tags node,agent,k3s; then
    show_failure reapply.log
    return 1
  fi
  local host
  STEP_FAILED=0
  for host in "${HOSTS[@]}"; do
    echo "second run: $(recap reapply.log "$host")"
    check "second run changed=0 ($host)" unchanged reapply.log "$host"
  done
  return "$STEP_FAILED"
}

# A binary whose sha256 differs from the pin must be refused before it reaches a node.
k3s_wrong_sha() {
  local wrong
  wrong=$(printf '%064d' 0)
  STEP_FAILED=0
  if play k3s-wrong-sha.log --tags k3s --limit worker -e "k3s_binary_sha256=$wrong" \
    -e "k3s_binary_cache_dir=$WORK/cache-wrong"; then
    check "wrong sha256 refused" false
  else
    check "wrong sha256 refused" true
  fi
  check "refusal names the checksum" grep -qF "did not match $wrong" "$WORK/k3s-wrong-sha.log"
  check "nothing left in the cache" test -z "$(ls -A "$WORK/cache-wrong")"
  check "installed binary untouched" cmp -s "$WORK/k3s-standin" "$WORK/worker/usr/local/bin/k3s"
  return "$STEP_FAILED"
}

# --- auditflow_platform and ci_runner, against a recording kubectl and a fake runner API ---------
# No cluster here: a kubectl stand-in in the server root records what the roles apply, a
# stand-in for the CI provider's runner API serves on 127.0.0.1, and k8s/ is replaced by a
# small fixture (k8s/ belongs to the Kubernetes checks). This checks the roles' own logic: what
# they send, in which order, and that no secret leaks into the output.
platform_and_runner() {
  local a="$WORK/server" api_pid port rc=0
  install -m 0755 ansible/tests/fake-kubectl.sh "$a/usr/local/bin/kubectl-fake"
  mkdir -p "$a/opt/fake-bin"
  ln -sf /usr/local/bin/kubectl-fake "$a/opt/fake-bin/kubectl"
  : >"$a/var/log/kubectl-fake.log"
  : >"$a/var/log/create-secrets-fake.log"
  python3 ansible/tests/fake-runner-api.py 0 "$WORK/api.port" "$WORK/api.log" test-api-token &
  api_pid=$!
  for _ in $(seq 50); do
    [ -s "$WORK/api.port" ] && break
    sleep 0.1
  done
  port=$(cat "$WORK/api.port")
  cat >"$WORK/platform-vars.json" <<JSON
{
  "auditflow_platform_kubectl": ["/usr/local/bin/kubectl-fake"],
  "auditflow_platform_kubectl_dir": "/opt/fake-bin",
  "auditflow_platform_k8s_dir": "$ROOT/ansible/tests/fixtures/k8s",
  "auditflow_platform_cache_dir": "$WORK/platform-cache",
  "auditflow_platform_secrets": [{"name": "auditflow-extra", "data": {"token": "s3cret-for-test"}}],
  "auditflow_platform_helm_values": {"image": {"tag": "9.9.9"}},
  "ci_runner_enabled": true,
  "ci_runner_kubectl": ["/usr/local/bin/kubectl-fake"],
  "ci_runner_api_url": "http://127.0.0.1:$port",
  "ci_runner_scope": "repos/owner/repo",
  "ci_runner_register_url": "https://ci.test.invalid/owner/repo",
  "ci_runner_api_token": "test-api-token",
  "ci_runner_deploy_namespaces": ["auditflow-prod"],
  "ci_runner_verify_delay": 1
}
JSON
  play platform-kustomize.log --tags platform,ci_runner -e "@$WORK/platform-vars.json" || rc=$?
  if [ $rc = 0 ]; then
    play platform-helm.log --tags platform -e "@$WORK/platform-vars.json" \
      -e auditflow_platform_method=helm || rc=$?
  fi
  if [ $rc = 0 ]; then
    cp "$a/var/lib/auditflow-deploy/helmchart.yaml" "$WORK/helmchart-1.yaml"
    play platform-helm-again.log --tags platform -e "@$WORK/platform-vars.json" \
      -e auditflow_platform_method=helm || rc=$?
  fi
  # The timer's job, run once by hand inside the server root against the fake API (the
  # kubectl stand-in records the Secret it is given).
  if [ $rc = 0 ]; then
    local before
    before=$(wc -l <"$a/var/log/kubectl-fake.log")
    chroot "$a" /bin/sh -c 'set -a; . /etc/auditflow/ci-runner-token.env; exec /usr/local/libexec/auditflow-ci-runner-token' \
      >"$WORK/renewal.log" 2>&1 || echo "renewal exited $?" >>"$WORK/renewal.log"
    tail -n "+$((before + 1))" "$a/var/log/kubectl-fake.log" >"$WORK/renewal-kubectl.log"
  fi
  kill "$api_pid"
  wait "$api_pid" 2>/dev/null || true
  if [ $rc != 0 ]; then
    local log
    for log in platform-kustomize.log platform-helm.log platform-helm-again.log; do
      if [ -f "$WORK/$log" ]; then show_failure "$log"; fi
    done
    return 1
  fi
  echo "kustomize + runner: $(recap platform-kustomize.log server)"
  echo "helm:               $(recap platform-helm.log server)"
  local k="$a/var/log/kubectl-fake.log" deploy=/var/lib/auditflow-deploy
  STEP_FAILED=0
  # The platform.
  check "k8s/ copied to the server" test -f "$a$deploy/k8s/overlays/prod/kustomization.yaml"
  # The broker gets the outside host's node id and the SHA-256 of its own password, nothing
  # more: the cluster's nodes need no line (their pods log in with their own tokens).
  local pw line
  pw=$(cat "$WORK/.auditflow-mqtt-passwords/outside" 2>/dev/null || echo no-password)
  line="test-node:sha256:$(printf '%s' "$pw" | sha256sum | cut -d' ' -f1)"
  check "Secrets made by create-secrets.sh, broker admits the outside host by its hash" \
    grep -qxF "auditflow-prod $line" "$a/var/log/create-secrets-fake.log"
  check "helm: create-secrets.sh copies only the cluster's keys" \
    grep -qx -- '--jwks-only auditflow-prod' "$a/var/log/create-secrets-fake.log"
  check "HelmChart gives the broker the outside host's hashed line" grep -qF -- "- $line" "$a$deploy/helmchart.yaml"
  for log in platform-kustomize.log platform-helm.log platform-helm-again.log; do
    check "no agent password in $log" lacks "$WORK/$log" "$pw"
  done
  check "no agent password in the HelmChart" lacks "$a$deploy/helmchart.yaml" "$pw"
  check "no agent password in the kubectl calls" lacks "$k" "$pw"
  check "Secret from a variable" grep -qF '"stringData": {"token": "s3cret-for-test"}' "$k"
  check "overlay compared" grep -qx "ARGS diff -k $deploy/k8s/overlays/prod" "$k"
  check "overlay applied" grep -qx "ARGS apply -k $deploy/k8s/overlays/prod" "$k"
  check "rollout awaited" grep -qx 'ARGS -n auditflow-prod rollout status daemonset.apps/auditflow-agent --timeout=600s' "$k"
  check "HelmChart 0600" mode_is "$a" "$deploy/helmchart.yaml" 600 root root
  check "HelmChart carries the chart and the merged values" "$VENV/bin/python" -c '
import base64, io, sys, tarfile, yaml
doc = yaml.safe_load(open(sys.argv[1]))
spec = doc["spec"]
assert doc["kind"] == "HelmChart" and spec["targetNamespace"] == "auditflow-prod", doc
names = tarfile.open(fileobj=io.BytesIO(base64.b64decode(spec["chartContent"]))).getnames()
assert "auditflow/Chart.yaml" in names and "auditflow/templates/configmap.yaml" in names, names
values = yaml.safe_load(spec["valuesContent"])
lines = values["broker"].pop("offClusterCredentials")
assert len(lines) == 1 and lines[0].startswith("test-node:sha256:"), lines
assert values == {"replicas": 2, "image": {"tag": "9.9.9"}, "broker": {}}, values
' "$a$deploy/helmchart.yaml"
  check "chart packed reproducibly" cmp -s "$WORK/helmchart-1.yaml" "$a$deploy/helmchart.yaml"
  check "HelmChart unchanged on the second run" \
    bash -c "grep -A1 'Write the HelmChart object' '$WORK/platform-helm-again.log' | grep -q '^ok:'"
  # The CI runner's lifecycle.
  check "runners listed" grep -qx 'GET /repos/owner/repo/actions/runners?per_page=100' "$WORK/api.log"
  check "stale registration removed" grep -qx 'DELETE /repos/owner/repo/actions/runners/1' "$WORK/api.log"
  check "other runners kept" bash -c "! grep -qE '^DELETE .*/runners/(2|3)$' '$WORK/api.log'"
  check "registration token fetched" grep -qx 'POST /repos/owner/repo/actions/runners/registration-token' "$WORK/api.log"
  check "registration token stored in a Secret" grep -qF '"stringData": {"token": "REGTOKEN-FOR-TEST"}' "$k"
  check "runner manifests valid" "$VENV/bin/python" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = [d["kind"] for d in docs]
assert kinds == ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment"], kinds
pod = docs[-1]["spec"]["template"]["spec"]
c = pod["containers"][0]
assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]
assert c["resources"]["limits"]["memory"] == "2Gi", c["resources"]
assert c["securityContext"]["allowPrivilegeEscalation"] is False
assert pod["securityContext"]["runAsNonRoot"] is True
env = {e["name"]: e["value"] for e in c["env"]}
assert env["RUNNER_URL"] == "https://ci.test.invalid/owner/repo", env
' "$a$deploy/ci-runner/ci-runner.yaml"
  check "runner deploys through a Role without Secrets, exec or wildcards" "$VENV/bin/python" -c '
import sys, yaml
docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
role, binding = docs["Role"], docs["RoleBinding"]
assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "auditflow-prod"
assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ci-runner-deploy"}, binding
for rule in role["rules"]:
    for r in rule["resources"]:
        assert r != "*" and r.split("/")[0] != "secrets", rule
        assert r not in ("pods/exec", "pods/attach", "pods/portforward", "serviceaccounts/token"), rule
    assert "*" not in rule["verbs"] and "*" not in rule["apiGroups"], rule
    assert not set(rule["verbs"]) & {"impersonate", "bind", "escalate"}, rule
' "$a$deploy/ci-runner/ci-runner.yaml"
  check "runner is ephemeral: --ephemeral, no volume for its state" "$VENV/bin/python" -c '
import sys, yaml
docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
assert "--ephemeral" in docs["ConfigMap"]["data"]["entrypoint.sh"]
pod = docs["Deployment"]["spec"]["template"]["spec"]
assert sorted(v["name"] for v in pod["volumes"]) == ["entrypoint", "registration"], pod["volumes"]
assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
' "$a$deploy/ci-runner/ci-runner.yaml"
  check "token renewal installed" mode_is "$a" /usr/local/libexec/auditflow-ci-runner-token 755 root root
  check "token renewal settings 0600 root" mode_is "$a" /etc/auditflow/ci-runner-token.env 600 root root
  check "token renewal settings hold the API token" has "$a" /etc/auditflow/ci-runner-token.env 'CI_RUNNER_API_TOKEN=test-api-token'
  check "token renewal timer enabled" test -L "$a/etc/systemd/system/timers.target.wants/auditflow-ci-runner-token.timer"
  check "token renewal units pass systemd-analyze verify" chroot "$a" systemd-analyze verify \
    /etc/systemd/system/auditflow-ci-runner-token.service /etc/systemd/system/auditflow-ci-runner-token.timer
  check "token renewal stored a fresh token from the API" \
    grep -qF '"stringData": {"token": "REGTOKEN-FOR-TEST"}' "$WORK/renewal-kubectl.log"
  check "runner verified online and idle" \
    bash -c "grep -A1 'Verify that the runner is online and idle' '$WORK/platform-kustomize.log' | grep -q '^ok:'"
  local log
  for log in platform-kustomize.log platform-helm.log platform-helm-again.log renewal.log; do
    check "no secret in $log" bash -c "! grep -qE 's3cret-for-test|REGTOKEN-FOR-TEST|test-api-token' '$WORK/$log'"
  done
  return "$STEP_FAILED"
}

# --- a password per agent host, never shared ------------------------------------------------
# The roles' defaults for two local hosts (ansible/tests/mqtt-passwords.yml), run twice: each
# host gets its own random password, kept on the controller (0600 in a 0700 folder), the same
# on the second run; the broker's line for each is `node:sha256:<SHA-256 of its password>`; no
# password appears in the output.
mqtt_passwords() {
  local dir="$WORK/passwords" inv="$WORK/passwords/inventory" run
  rm -rf "$dir"
  mkdir -p "$inv" "$dir/run1" "$dir/run2"
  cat >"$inv/hosts.yml" <<INVENTORY
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: $VENV/bin/python
  children:
    k3s_servers:
      hosts:
        server: {}
    auditflow_agents:
      hosts:
        alpha.example.test: {}
        beta: {}
INVENTORY
  for run in run1 run2; do
    if ! (cd ansible && ANSIBLE_NOCOLOR=1 ansible-playbook -i "$inv/hosts.yml" tests/mqtt-passwords.yml \
      -e "result_dir=$dir/$run") >"$WORK/mqtt-passwords-$run.log" 2>&1; then
      show_failure "mqtt-passwords-$run.log"
      return 1
    fi
  done
  STEP_FAILED=0
  local a b
  a=$(cat "$dir/run1/alpha.example.test.password")
  b=$(cat "$dir/run1/beta.password")
  check "two hosts get different passwords" test "$a" != "$b"
  check "passwords are 40 random letters and digits" bash -c "[[ '$a' =~ ^[A-Za-z0-9]{40}\$ && '$b' =~ ^[A-Za-z0-9]{40}\$ ]]"
  check "kept on the controller beside the inventory" test "$(cat "$inv/.auditflow-mqtt-passwords/beta")" = "$b"
  check "controller's folder 0700, files 0600" test \
    "$(stat -c '%a' "$inv/.auditflow-mqtt-passwords" "$inv/.auditflow-mqtt-passwords/alpha.example.test" "$inv/.auditflow-mqtt-passwords/beta" | tr '\n' ' ')" = '700 600 600 '
  check "the same passwords on the next run" cmp -s "$dir/run1/beta.password" "$dir/run2/beta.password"
  check "the broker's line is the node id and the SHA-256 of its password" "$VENV/bin/python" -c '
import hashlib, json, sys
lines = json.load(open(sys.argv[1]))
want = sorted(f"{node}:sha256:{hashlib.sha256(pw.encode()).hexdigest()}" for node, pw in (("alpha", sys.argv[2]), ("beta", sys.argv[3])))
assert lines == want, (lines, want)
' "$dir/run1/lines.json" "$a" "$b"
  check "no password in the output" bash -c "! grep -qF -e '$a' -e '$b' '$WORK/mqtt-passwords-run1.log' '$WORK/mqtt-passwords-run2.log'"
  return "$STEP_FAILED"
}

stage tools tools
stage ansible-lint lint
stage syntax-check syntax
stage debian-roots rootfs
stage apply-nodes apply_nodes
stage invalid-agent-config bad_config
stage agent-without-files agent_without_files
stage k3s-check-mode k3s_check_mode
stage k3s-apply k3s_apply
stage idempotence reapply_all
stage k3s-wrong-sha256 k3s_wrong_sha
stage platform-and-ci-runner platform_and_runner
stage mqtt-passwords mqtt_passwords
summary
