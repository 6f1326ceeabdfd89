#!/usr/bin/env bash
# Boots a node image under qemu-system-aarch64 and watches its serial console: the first-boot
# setup must finish from a sample auditflow.txt, and the agent and sshd (with host keys made
# at that boot) must start.
#
#   pi-image/boot-test.sh target/pi-image/auditflow-node-arm64.img
#
# qemu's `virt` machine (Cortex-A72, software emulation, user-mode network with restrict=on) stands in for
# the Pi: it boots the image's own Debian kernel and initrd, taken from its boot partition,
# with the image as a virtio disk, so the root file system, the first boot and the services
# are the ones a Pi runs (the Pi's firmware and device tree are not exercised). The image is
# copied first; the original stays as built. Installs qemu-system-arm and mtools when missing.
set -euo pipefail
image=${1:?usage: pi-image/boot-test.sh IMAGE}
TIMEOUT=${BOOT_TIMEOUT:-900}
log() { echo "[boot-test] $*"; }

need=()
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v mcopy >/dev/null || need+=(mtools)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'kill "$qemu" 2>/dev/null || true; rm -rf "$work"' EXIT
qemu=""
cp --sparse=always "$image" "$work/disk.img"
boot="$work/disk.img@@4M"
export MTOOLS_SKIP_CHECK=1
kernel=$(mdir -b -i "$boot" ::/ | sed -n 's|^::/\(vmlinuz-.*\)|\1|p' | sort -V | tail -n 1)
initrd=$(mdir -b -i "$boot" ::/ | sed -n 's|^::/\(initrd.img-.*\)|\1|p' | sort -V | tail -n 1)
[ -n "$kernel" ] && [ -n "$initrd" ] || { mdir -i "$boot" ::/; echo "no kernel or initrd on the boot partition" >&2; exit 1; }
mcopy -i "$boot" "::/$kernel" "$work/vmlinuz"
mcopy -i "$boot" "::/$initrd" "$work/initrd"
cat >"$work/auditflow.txt" <<'EOF'
hostname = pi-qemu
mode = agent
broker_url = mqtt://auditflow-broker.invalid:1883
mqtt_password = boot-test
EOF
mcopy -i "$boot" "$work/auditflow.txt" ::/auditflow.txt
log "booting $kernel under qemu-system-aarch64 (virt, cortex-a72, TCG; up to ${TIMEOUT}s)"

start=$(date +%s)
# Networking: qemu's user-mode network with restrict=on (its DHCP server answers, nothing
# leaves the guest), so the image's DHCP setup for eth0 is exercised. romfile= : no PXE
# option ROM (it is in another package, and the kernel is loaded directly).
qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -nographic -no-reboot \
  -netdev user,id=net0,restrict=on -device virtio-net-pci,netdev=net0,romfile= \
  -kernel "$work/vmlinuz" -initrd "$work/initrd" \
  -append "root=LABEL=RASPIROOT rw net.ifnames=0 console=ttyAMA0 panic=-1 systemd.show_status=1" \
  -drive "if=virtio,format=raw,file=$work/disk.img" >"$work/console.log" 2>&1 &
qemu=$!
firstboot=no agent=no network=no ssh=no
while kill -0 "$qemu" 2>/dev/null && [ $(($(date +%s) - start)) -lt "$TIMEOUT" ]; do
  # systemd colours its status lines: compare without the escape sequences.
  sed 's/\x1b\[[0-9;]*m//g' "$work/console.log" >"$work/plain.log"
  grep -q 'auditflow-firstboot: set up as pi-qemu (agent)' "$work/plain.log" && firstboot=yes
  grep -q 'auditflow-agent: running (pid' "$work/plain.log" && agent=yes
  # ifup@eth0 is a oneshot that runs dhclient: OK only once a lease is bound.
  grep -q 'OK .*ifup@eth0' "$work/plain.log" && network=yes
  # sshd refuses to start without host keys; the image has none until this boot.
  grep -q 'OK .*OpenBSD Secure Shell server' "$work/plain.log" && ssh=yes
  [ "$firstboot" = yes ] && [ "$agent" = yes ] && [ "$network" = yes ] && [ "$ssh" = yes ] && break
  sleep 2
done
elapsed=$(($(date +%s) - start))
cp "$work/console.log" "$(dirname "$image")/boot-test-console.log"
if [ "$firstboot" = yes ] && [ "$agent" = yes ] && [ "$network" = yes ] && [ "$ssh" = yes ]; then
  log "first boot finished, eth0 got a DHCP lease, the agent and sshd started after ${elapsed}s (console: $(dirname "$image")/boot-test-console.log)"
  grep -E 'auditflow-firstboot|auditflow-agent' "$work/plain.log" | tail -n 5
else
  tail -n 40 "$work/console.log"
  log "FAILED after ${elapsed}s: first boot finished: $firstboot, agent started: $agent, eth0 leased: $network, sshd started: $ssh"
  exit 1
fi
