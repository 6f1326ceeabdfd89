#!/usr/bin/env bash
# Fast test of the node image's own files (the test command's "pi-image" stage): runs
# auditflow-firstboot against throwaway root file systems with sample boot configs, in
# agent mode, in k3s-agent mode, again after success (nothing changes) and with broken
# configs (nothing changes, every problem is named), and checks that the agent accepts the
# environment file it writes and the broker the credentials line. Needs the agent and broker
# binaries (AGENT_BIN, BROKER_BIN; default target/debug).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT_DIR=$PWD
FIRSTBOOT="$ROOT_DIR/pi-image/firstboot/auditflow-firstboot"
AGENT_BIN=${AGENT_BIN:-$ROOT_DIR/target/debug/auditflow-agent}
BROKER_BIN=${BROKER_BIN:-$ROOT_DIR/target/debug/auditflow-broker}
[ -x "$AGENT_BIN" ] || { echo "no agent binary at $AGENT_BIN (cargo build -p agent)" >&2; exit 1; }
[ -x "$BROKER_BIN" ] || { echo "no broker binary at $BROKER_BIN (cargo build -p broker)" >&2; exit 1; }
command -v systemctl >/dev/null || { echo "systemctl is required (systemd)" >&2; exit 1; }

passed=0 failed=0
check() { # description command...
  local what=$1
  shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $what"; fi
}
mode_of() { stat -c %a "$1"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A root file system as the image has it before first boot: the units to enable, a hosts file
# with Debian's 127.0.1.1 line, the boot partition.
new_root() {
  local r="$work/$1"
  mkdir -p "$r/etc/systemd/system" "$r/boot/firmware" "$r/var/lib" "$r/root"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n' >"$r/etc/hosts"
  echo debian >"$r/etc/hostname"
  for unit in auditflow-agent k3s-agent; do
    printf '[Unit]\nDescription=%s\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n' \
      "$unit" >"$r/etc/systemd/system/$unit.service"
  done
  install -m 0644 pi-image/firstboot/auditflow-firstboot.service "$r/etc/systemd/system/"
  echo "$r"
}
firstboot() { AUDITFLOW_ROOT="$1" sh "$FIRSTBOOT"; }
snapshot() { (cd "$1" && find . -printf '%p %m %s %l\n' | sort && cat etc/hostname etc/hosts boot/firmware/auditflow.txt) | sha256sum; }

# --- agent mode, with a CA and an SSH key -----------------------------------------------
r=$(new_root agent)
cat >"$r/boot/firmware/auditflow.txt" <<'EOF'
# sample
hostname = pi-test-1
mode = "agent"
broker_url = mqtts://broker.lan:8883
mqtt_password = s3cret-Pa55-0123456789
broker_ca = ca.pem
ssh_authorized_key = ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOn3c8N0Ld7XzLr2m7S0h0+Qp1bKJ8b0p0aKxq9m0Q1a admin@laptop
EOF
printf -- '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' >"$r/boot/firmware/ca.pem"
out=$(firstboot "$r")
check "agent: says what it did" grep -q 'set up as pi-test-1 (agent)' <<<"$out"
check "agent: hostname" test "$(cat "$r/etc/hostname")" = pi-test-1
check "agent: hosts line replaced" grep -qP '^127\.0\.1\.1\tpi-test-1$' "$r/etc/hosts"
check "agent: no stale hosts line" bash -c "! grep -q debian '$r/etc/hosts'"
check "agent: env file is root-only" test "$(mode_of "$r/etc/auditflow/agent.env")" = 600
check "agent: env file content" diff <(grep -v '^#' "$r/etc/auditflow/agent.env") <(printf 'AUDITFLOW_MQTT_URL=mqtts://broker.lan:8883\nAUDITFLOW_MQTT_PASSWORD=s3cret-Pa55-0123456789\nAUDITFLOW_MQTT_CA_FILE=/etc/auditflow/mqtt-ca.pem\n')
check "agent: CA installed" cmp -s "$r/boot/firmware/ca.pem" "$r/etc/auditflow/mqtt-ca.pem"
check "agent: agent service enabled" test -L "$r/etc/systemd/system/multi-user.target.wants/auditflow-agent.service"
check "agent: k3s not enabled" test ! -e "$r/etc/systemd/system/multi-user.target.wants/k3s-agent.service"
check "agent: password gone from the boot partition" bash -c "! grep -q s3cret '$r/boot/firmware/auditflow.txt'"
check "agent: the rest of the boot file kept" grep -q '^hostname = pi-test-1$' "$r/boot/firmware/auditflow.txt"
check "agent: ssh key installed" grep -q '^ssh-ed25519 AAAAC3' "$r/root/.ssh/authorized_keys"
check "agent: ssh key file mode" test "$(mode_of "$r/root/.ssh/authorized_keys")" = 600
check "agent: done marker" test -s "$r/var/lib/auditflow/firstboot.done"
check "agent: the broker's line holds the password's hash" grep -qx "pi-test-1:sha256:$(printf s3cret-Pa55-0123456789 | sha256sum | cut -d' ' -f1)" "$r/boot/firmware/auditflow-credentials.txt"
check "agent: the broker's line is on the console" grep -q 'credentials line for this node.*pi-test-1:sha256:' <<<"$out"
# The agent itself accepts what was written (the image's agent.toml leaves these to the env).
printf 'node_id = ""\n[spool]\ndir = "%s/spool"\n[transport]\nkind = "mqtt"\n' "$work" >"$work/agent.toml"
check "agent: the agent accepts the environment" \
  env -i $(grep -v '^#' "$r/etc/auditflow/agent.env") "$AGENT_BIN" check-config --config "$work/agent.toml"
# A second boot changes nothing.
before=$(snapshot "$r")
out=$(firstboot "$r")
check "agent: second run is a no-op" test "$before" = "$(snapshot "$r")"
check "agent: second run says so" grep -q 'already set up' <<<"$out"

# --- agent mode without a password: the node makes its own ---------------------------------
generated() { grep '^AUDITFLOW_MQTT_PASSWORD=' "$1/etc/auditflow/agent.env" | cut -d= -f2-; }
r=$(new_root own-password)
printf 'hostname = pi-own-3
broker_url = mqtt://broker.lan
' >"$r/boot/firmware/auditflow.txt"
out=$(firstboot "$r")
pw=$(generated "$r")
check "own password: 32 characters" test "${#pw}" = 32
check "own password: the broker's line matches it" grep -qx "pi-own-3:sha256:$(printf '%s' "$pw" | sha256sum | cut -d' ' -f1)" "$r/boot/firmware/auditflow-credentials.txt"
check "own password: never on the boot partition" bash -c "! grep -rqF -- '$pw' '$r/boot/firmware'"
check "own password: never on the console" bash -c "! grep -qF -- '$pw' <<<'$out'"
r2=$(new_root own-password-2)
printf 'hostname = pi-own-4
broker_url = mqtt://broker.lan
' >"$r2/boot/firmware/auditflow.txt"
firstboot "$r2" >/dev/null
check "own password: another node gets another" test "$pw" != "$(generated "$r2")"
# The broker takes the line and lets the node in with its password (credentials.rs parses it).
check "own password: the broker accepts the line" \
  "$BROKER_BIN" check-config --config <(printf '[mqtt]\ncredentials_file = "%s"\n[amqp]\nurl = "amqp://x"\n' "$r/boot/firmware/auditflow-credentials.txt")

# --- k3s-agent mode ------------------------------------------------------------------------
r=$(new_root k3s)
printf 'hostname=pi-k3s-2\nmode=k3s-agent\nk3s_url=https://k3s.lan:6443\nk3s_token=K10abc::server:def\n' \
  >"$r/boot/firmware/auditflow.txt"
firstboot "$r" >/dev/null
check "k3s: config is root-only" test "$(mode_of "$r/etc/rancher/k3s/config.yaml")" = 600
check "k3s: config content" diff <(grep -v '^#' "$r/etc/rancher/k3s/config.yaml") <(printf 'server: "https://k3s.lan:6443"\ntoken: "K10abc::server:def"\nnode-name: "pi-k3s-2"\n')
check "k3s: k3s-agent enabled" test -L "$r/etc/systemd/system/multi-user.target.wants/k3s-agent.service"
check "k3s: agent service not enabled" test ! -e "$r/etc/systemd/system/multi-user.target.wants/auditflow-agent.service"
check "k3s: token gone from the boot partition" bash -c "! grep -q K10abc '$r/boot/firmware/auditflow.txt'"
check "k3s: no agent env file" test ! -e "$r/etc/auditflow/agent.env"

# --- broken configs: every problem named, nothing changed ---------------------------------
r=$(new_root broken)
printf 'hostname = Pi_Node\nbroker_url = http://x\nfavourite_colour = blue\njust words\nssh_authorized_key = not-a-key\n' \
  >"$r/boot/firmware/auditflow.txt"
before=$(snapshot "$r")
if err=$(firstboot "$r" 2>&1); then rc=0; else rc=$?; fi
check "broken: fails" test "$rc" = 1
for problem in "hostname: 'Pi_Node' is not a DNS label" "broker_url: 'http://x'" \
  "line 3: unknown key 'favourite_colour'" "line 4: not key = value" "ssh_authorized_key: not an OpenSSH"; do
  check "broken: names '$problem'" grep -qF "$problem" <<<"$err"
done
check "broken: nothing changed" test "$before" = "$(snapshot "$r")"
check "broken: not marked done" test ! -e "$r/var/lib/auditflow/firstboot.done"

r=$(new_root no-config)
if firstboot "$r" >/dev/null 2>&1; then rc=0; else rc=$?; fi
check "no config: fails clearly" test "$rc" = 1

# The unit: runs once, before the services it configures.
unit=pi-image/firstboot/auditflow-firstboot.service
check "unit: once" grep -q '^ConditionPathExists=!/var/lib/auditflow/firstboot.done$' "$unit"
check "unit: before the agent" grep -q '^Before=auditflow-agent.service k3s-agent.service' "$unit"

# sshd: the image carries no host keys, so they are made before sshd checks its configuration.
dropin=pi-image/rootfs/etc/systemd/system/ssh.service.d/host-keys.conf
check "sshd: host keys made before it starts" test "$(grep '^ExecStartPre=' "$dropin" | tr '\n' '|')" = \
  'ExecStartPre=|ExecStartPre=/usr/bin/ssh-keygen -A|ExecStartPre=/usr/sbin/sshd -t|'

# --- k3s in the image: pi-image/add-k3s.sh ------------------------------------------------
# A stand-in binary (the real one cannot be downloaded here): the pinned digest refuses it,
# its own digest (K3S_SHA256, as the Ansible role's tests override theirs) lets it in.
r=$(new_root k3s-image)
rm -f "$r/etc/systemd/system/k3s-agent.service"
printf '#!/bin/sh\necho k3s stand-in\n' >"$work/k3s-arm64"
if err=$(bash pi-image/add-k3s.sh "$r" "$work/k3s-arm64" 2>&1); then rc=0; else rc=$?; fi
check "add-k3s: a binary that is not the pinned release is refused" test "$rc" = 1
check "add-k3s: names the digests" grep -q 'as the Ansible roles pin it' <<<"$err"
check "add-k3s: nothing installed when refused" test ! -e "$r/usr/local/bin/k3s" -a ! -e "$r/etc/systemd/system/k3s-agent.service"
K3S_SHA256=$(sha256sum "$work/k3s-arm64" | cut -d' ' -f1) bash pi-image/add-k3s.sh "$r" "$work/k3s-arm64" >/dev/null
check "add-k3s: binary installed" test -x "$r/usr/local/bin/k3s"
check "add-k3s: kubectl link" test "$(readlink "$r/usr/local/bin/kubectl")" = k3s
unit_file="$r/etc/systemd/system/k3s-agent.service"
pinned_version=$(sed -n 's/^k3s_binary_version: *//p' ansible/roles/k3s_binary/defaults/main.yml)
check "add-k3s: unit rendered from the role's template" grep -q "^Description=k3s agent ($pinned_version)$" "$unit_file"
check "add-k3s: unit runs the binary" grep -q '^ExecStart=/usr/local/bin/k3s agent$' "$unit_file"
check "add-k3s: no template syntax left" bash -c "! grep -q '{{' '$unit_file'"
printf 'hostname = pi-k3s-2\nmode = k3s-agent\nk3s_url = https://server.lan:6443\nk3s_token = K10abc::server:def\n' \
  >"$r/boot/firmware/auditflow.txt"
firstboot "$r" >/dev/null
check "add-k3s: first boot enables the installed unit" test -L "$r/etc/systemd/system/multi-user.target.wants/k3s-agent.service"

# --- image assembly: the same tree gives the same image ------------------------------------
# pi-image/assemble.sh over a small tree, twice, with the tree touched in between (new
# ctimes, as every build has): the digests must match, and both file systems must hold the
# tree.
need=()
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v mcopy >/dev/null || need+=(mtools)
command -v sfdisk >/dev/null || need+=(fdisk)
command -v debugfs >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
tree="$work/tree"
mkdir -p "$tree/boot/firmware/overlays" "$tree/etc/auditflow" "$tree/usr/local/bin" "$tree/var/empty"
printf 'console=serial0,115200 root=LABEL=RASPIROOT\n' >"$tree/boot/firmware/cmdline.txt"
printf 'dtoverlay\n' >"$tree/boot/firmware/overlays/README"
cp pi-image/rootfs/etc/auditflow/agent.toml "$tree/etc/auditflow/agent.toml"
printf 'with "quotes" and \\ backslash\n' >"$tree/etc/auditflow/odd \"name\""
install -m 0755 "$FIRSTBOOT" "$tree/usr/local/bin/auditflow-firstboot"
ln -s usr/local/bin "$tree/bin"
epoch=1795000000
assemble() { SOURCE_DATE_EPOCH=$epoch BOOT_MB=40 ROOT_MB=16 bash pi-image/assemble.sh "$tree" "$1"; }
assemble "$work/a.img"
sleep 1.1 && find "$tree" -exec touch -h {} + && chmod 0755 "$tree/usr/local/bin/auditflow-firstboot"
assemble "$work/b.img"
check "assemble: same tree, same image" test "$(sha256sum <"$work/a.img")" = "$(sha256sum <"$work/b.img")"
check "assemble: tree left as it was" test -f "$tree/boot/firmware/cmdline.txt"
dd if="$work/a.img" of="$work/root.img" bs=1M skip=44 status=none
check "assemble: root file system is clean" e2fsck -fn "$work/root.img" >/dev/null 2>&1
check "assemble: root holds the tree" cmp -s <(debugfs -R "cat /etc/auditflow/agent.toml" "$work/root.img" 2>/dev/null) pi-image/rootfs/etc/auditflow/agent.toml
check "assemble: odd names kept" bash -c "debugfs -R 'ls -l /etc/auditflow' '$work/root.img' 2>/dev/null | grep -qF 'odd \"name\"'"
# The names in a directory of an ext4 image (debugfs ls -p: /inode/mode/uid/gid/name/size/).
ext4_ls() { debugfs -R "ls -p $2" "$1" 2>/dev/null | awk -F/ 'NF > 5 && $6 != "." && $6 != ".." { print $6 }'; }
check "assemble: only an empty firmware directory under /boot" test "$(ext4_ls "$work/root.img" /boot)|$(ext4_ls "$work/root.img" /boot/firmware)" = "firmware|"
ctime_hex=$(printf '%x' "$epoch")
check "assemble: every ctime is SOURCE_DATE_EPOCH" bash -c "debugfs -R 'stat /usr/local/bin/auditflow-firstboot' '$work/root.img' 2>/dev/null | grep -q 'ctime: 0x$ctime_hex'"
check "assemble: boot partition holds the firmware" bash -c "MTOOLS_SKIP_CHECK=1 mtype -i '$work/a.img@@4M' ::/cmdline.txt | grep -q RASPIROOT"

echo "pi-image firstboot: $passed passed, $failed failed"
[ "$failed" = 0 ]
