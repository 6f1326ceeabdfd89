#!/usr/bin/env bash
# Builds a bootable arm64 SD-card image for Raspberry Pi 4/5 with the AuditFlow agent built
# in, from Debian packages only, on an amd64 Debian machine without mounting anything:
#
# 1. root file system: debootstrap of Debian 13 (trixie; SUITE=bookworm for Debian 12) arm64
#    (--foreign; the second stage runs under qemu-user through binfmt_misc), with systemd,
#    ssh, Debian's arm64 kernel and raspi-firmware (the Pi's boot firmware; it copies kernel,
#    initrd and device trees to /boot/firmware). Kept in target/pi-image/rootfs-<digest>.tar
#    and reused while the suite, the package list, the apt sources and raspi-firmware's
#    settings are unchanged.
# 2. AuditFlow: the static arm64 agent (scripts/build-images.sh --binaries-only), the agent's
#    unit and configuration (pi-image/rootfs/), the first-boot setup (pi-image/firstboot/),
#    an `auditflow` system user in the adm group.
# 3. partitions (pi-image/assemble.sh): the FAT boot partition made with `mkfs.vfat -C` and
#    filled with `mcopy`, the ext4 root made with `mkfs.ext4 -d`, both written into the
#    image after `sfdisk`. Fixed labels, UUIDs, volume id, SOURCE_DATE_EPOCH for every time
#    stamp: the same cached Debian root and the same tree give the same image, byte for byte.
#
#   pi-image/build.sh                 target/pi-image/auditflow-node-arm64.img
#   SUITE=bookworm pi-image/build.sh  the same on Debian 12
#   pi-image/build.sh --boot-test     then boot it under qemu-system-aarch64 (pi-image/boot-test.sh)
#   K3S_BINARY=k3s-arm64 pi-image/build.sh   with k3s in the image (pi-image/add-k3s.sh)
#
# Needs root (chroot for the second stage) and these Debian packages, installed when
# missing: debootstrap qemu-user-static dosfstools mtools e2fsprogs fdisk.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
OUT="$ROOT_DIR/target/pi-image"
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-trixie}
PACKAGES=systemd,systemd-sysv,systemd-timesyncd,udev,kmod,iproute2,netbase,ifupdown,isc-dhcp-client,openssh-server,ca-certificates,dbus,initramfs-tools,e2fsprogs,dosfstools
# The kernel must carry the Pi 5's device tree (bcm2712-rpi-5-b.dtb) as well as the Pi 4's:
# Linux 6.12 does. Trixie's own kernel is 6.12; bookworm's is 6.1, which has none for the Pi
# 5, so there it comes from bookworm-backports (6.12). raspi-firmware (the suite's own)
# copies the device trees, the kernel and the initrd to the boot partition and writes
# config.txt and cmdline.txt. Both are installed with apt in the chroot after the second stage.
case $SUITE in
  trixie) KERNEL_SUITE=trixie LATE_PACKAGES="linux-image-arm64 raspi-firmware" ;;
  bookworm) KERNEL_SUITE=bookworm-backports LATE_PACKAGES="linux-image-arm64/bookworm-backports raspi-firmware" ;;
  *) echo "pi-image/build.sh: SUITE=$SUITE: the image is built from trixie or bookworm" >&2; exit 2 ;;
esac
# The image's apt sources (deb822, the format both releases read), also used for the kernel
# and raspi-firmware: the suite with its updates and security suites (a node of a security
# product must get Debian's security fixes through apt), and for bookworm its backports, whose
# kernel the image runs.
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SOURCES="Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates$([ "$KERNEL_SUITE" = "$SUITE" ] || echo " $KERNEL_SUITE")
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
BOOT_MB=256
ROOT_MB=${ROOT_MB:-1536}
# Fixed identifiers: the same inputs give the same image.
BOOT_VOLID=A0D17F10
ROOT_UUID=5f1e6a2c-4b8d-4e59-9a0f-0a0d17f10001
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

log() { echo "[pi-image] $*"; }
[ "$(id -u)" = 0 ] || { echo "pi-image/build.sh needs root (chroot)" >&2; exit 1; }

need=()
# A trixie root made on Debian 12 needs its point-release debootstrap (1.0.128+nmu2+deb12u2,
# which no longer pulls usr-is-merged into trixie) and keyring (2023.3+deb12u2, the first
# with trixie's release keys); older ones are upgraded.
at_least() { # package version
  local have
  have=$(dpkg-query -W -f '${Version}' "$1" 2>/dev/null) && dpkg --compare-versions "$have" ge "$2"
}
if [ "$SUITE" = trixie ]; then
  at_least debootstrap 1.0.128+nmu2+deb12u2 || need+=(debootstrap)
  at_least debian-archive-keyring 2023.3+deb12u2 || need+=(debian-archive-keyring)
else
  command -v debootstrap >/dev/null || need+=(debootstrap)
fi
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v mcopy >/dev/null || need+=(mtools)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v sfdisk >/dev/null || need+=(fdisk)
if [ ${#need[@]} -gt 0 ]; then
  log "installing or upgrading ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

# The second stage runs arm64 programs: qemu's binfmt handler (F: opened now, so it works
# inside the chroot).
if ! [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
fi

mkdir -p "$OUT"
rootfs="$OUT/rootfs"
# The Debian root depends only on these; it is cached under their digest.
RASPI_DEFAULTS='ROOTPART=LABEL=RASPIROOT
CONSOLES="ttyS1,115200 ttyAMA10,115200 tty0"'
key=$(printf '%s\n' "$SUITE" "$PACKAGES" "$RASPI_DEFAULTS" "$LATE_PACKAGES" "$SOURCES" | sha256sum | cut -c1-12)
cache="$OUT/rootfs-$key.tar"

# --- 1. the Debian root ----------------------------------------------------------------------
if ! [ -f "$cache" ]; then
  # A build killed during the apt step below may have left /proc mounted in the old root.
  umount "$rootfs/proc" 2>/dev/null || true
  rm -rf "$rootfs"
  log "debootstrap $SUITE arm64 (first stage) from $MIRROR"
  debootstrap --arch=arm64 --foreign --variant=minbase --components=main,non-free-firmware \
    --include="$PACKAGES" \
    "$SUITE" "$rootfs" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 ||
    { tail -n 30 "$OUT/debootstrap.log"; exit 1; }
  # Where raspi-firmware points the kernel at the root, and its consoles: the Pi 4's UART
  # (ttyS1), the Pi 5's debug UART (ttyAMA10), the screen (the last one is /dev/console).
  mkdir -p "$rootfs/etc/default"
  printf '%s\n' "$RASPI_DEFAULTS" >"$rootfs/etc/default/raspi-firmware"
  log "second stage under qemu-user (slow: every package is configured by emulated arm64)"
  chroot "$rootfs" /debootstrap/debootstrap --second-stage >>"$OUT/debootstrap.log" 2>&1 ||
    { tail -n 30 "$OUT/debootstrap.log"; exit 1; }
  log "kernel from $KERNEL_SUITE and raspi-firmware (apt in the chroot, also emulated)"
  # In place of debootstrap's one-line sources.list (apt would warn about sources given twice).
  rm -f "$rootfs/etc/apt/sources.list"
  printf '%s\n' "$SOURCES" >"$rootfs/etc/apt/sources.list.d/debian.sources"
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  # raspi-firmware fills the boot partition's directory and refuses to run without it.
  mkdir -p "$rootfs/boot/firmware"
  # --force-confold: keep the /etc/default/raspi-firmware written above (dpkg would otherwise
  # ask about it, and with no terminal fail). /proc is mounted for this step as debootstrap
  # mounts it for its own: raspi-firmware's scripts use ischroot, which needs it, to know they
  # run in a chroot rather than on a Pi whose boot partition is not mounted.
  mount -t proc proc "$rootfs/proc"
  trap 'umount "$rootfs/proc" 2>/dev/null || true' EXIT
  chroot "$rootfs" /bin/sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold \
    $LATE_PACKAGES" >>"$OUT/debootstrap.log" 2>&1 ||
    { tail -n 30 "$OUT/debootstrap.log"; exit 1; }
  umount "$rootfs/proc"
  trap - EXIT
  : >"$rootfs/etc/resolv.conf"
  tar -C "$rootfs" --numeric-owner -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
fi
# Always from the cache, also right after making it, so a fresh build and a cached one give
# the same image: tar does not carry extended attributes (the only ones the packages set are
# the journal directory's ACLs, which systemd-tmpfiles sets again at every boot; no file has
# capabilities), and what the image holds must not depend on which way it was made.
log "Debian root from $cache"
umount "$rootfs/proc" 2>/dev/null || true
rm -rf "$rootfs" && mkdir -p "$rootfs" && tar -C "$rootfs" --numeric-owner -xf "$cache"

# --- 2. AuditFlow ----------------------------------------------------------------------------
BINARIES=agent ARCHES=arm64 bash scripts/build-images.sh --binaries-only
install -m 0755 target/images/bin/auditflow-agent "$rootfs/usr/local/bin/auditflow-agent"
install -m 0755 pi-image/firstboot/auditflow-firstboot "$rootfs/usr/local/sbin/auditflow-firstboot"
install -m 0644 pi-image/firstboot/auditflow-firstboot.service "$rootfs/etc/systemd/system/"
cp -r pi-image/rootfs/. "$rootfs/"
chroot "$rootfs" /bin/sh -c '
  set -e
  id auditflow >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --user-group auditflow
  install -d -o auditflow -g auditflow -m 0700 /var/lib/auditflow/spool
  # The agent is enabled too: it starts once the first boot has written its broker
  # settings (ConditionPathExists=/etc/auditflow/agent.env), in that same boot.
  systemctl enable auditflow-firstboot.service auditflow-agent.service systemd-timesyncd.service \
    ssh.service >/dev/null
'
# k3s, when its arm64 release binary is given (checked against the digest the Ansible roles
# pin): then `mode = k3s-agent` joins the cluster on the first boot.
if [ -n "${K3S_BINARY:-}" ]; then
  bash pi-image/add-k3s.sh "$rootfs" "$K3S_BINARY"
fi
# No real-time clock on a Pi: until NTP answers, systemd starts the clock at no earlier than
# this file's time (SOURCE_DATE_EPOCH, as every file's), so events are not stamped 1970.
# systemd-timesyncd then keeps its own floor, the last synchronized time, for later boots.
: >"$rootfs/usr/lib/clock-epoch"
# The rest is per machine or per boot, made at first boot: machine id, ssh host keys.
: >"$rootfs/etc/machine-id"
rm -f "$rootfs"/etc/ssh/ssh_host_* "$rootfs/var/lib/dbus/machine-id"
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log \
  "$rootfs"/var/log/apt/* "$rootfs/debootstrap"
echo auditflow-node >"$rootfs/etc/hostname"
printf 'LABEL=RASPIROOT\t/\text4\trw,noatime\t0\t1\nLABEL=RASPIFIRM\t/boot/firmware\tvfat\trw,noatime\t0\t2\n' >"$rootfs/etc/fstab"
install -m 0644 pi-image/boot/auditflow.txt.example "$rootfs/boot/firmware/auditflow.txt.example"

# The boot partition must carry both boards' device trees.
for dtb in bcm2711-rpi-4-b.dtb bcm2712-rpi-5-b.dtb; do
  [ -f "$rootfs/boot/firmware/$dtb" ] || { echo "pi-image: no $dtb on the boot partition" >&2; exit 1; }
done

# --- 3. partitions and image -------------------------------------------------------------------
image="$OUT/auditflow-node-arm64.img"
BOOT_MB=$BOOT_MB ROOT_MB=$ROOT_MB BOOT_VOLID=$BOOT_VOLID ROOT_UUID=$ROOT_UUID \
  bash pi-image/assemble.sh "$rootfs" "$image"
log "image: $image ($(stat -c %s "$image") bytes), sha256 $(sha256sum "$image" | cut -c1-16)…"

if [ "${1:-}" = --boot-test ]; then
  bash pi-image/boot-test.sh "$image"
fi
