#!/usr/bin/env bash
# Assembles an SD-card image from a root file system tree, without mounting anything, so that
# the same tree gives the same image byte for byte:
#
#   pi-image/assemble.sh ROOTFS IMAGE
#
# * every file's mtime and atime set to SOURCE_DATE_EPOCH (required);
# * the boot partition: ROOTFS/boot/firmware/* in a FAT32 file system made with
#   `mkfs.vfat -C --invariant` (fixed volume id) and filled with `mcopy -m`;
# * the root partition: the rest of ROOTFS in an ext4 file system made with `mkfs.ext4 -d`
#   (fixed UUID and directory hash seed; it adds entries in alphasort order, so LC_ALL=C).
#   mkfs.ext4 copies each file's ctime, which no one can set (the kernel stamps it at every
#   change), so debugfs then sets every inode's ctime to SOURCE_DATE_EPOCH;
#   E2FSPROGS_FAKE_TIME pins the superblock's and the root's times for both tools;
# * a DOS partition table (sfdisk; disk id = the volume id), the partitions placed with dd.
#
# ROOTFS is left as it was. BOOT_MB (256) and ROOT_MB (1536) size the partitions. Used by
# pi-image/build.sh; pi-image/tests/firstboot.sh checks that two runs over the same tree,
# touched in between, give the same digest.
set -euo pipefail
export LC_ALL=C
[ $# = 2 ] || { echo "usage: $0 ROOTFS IMAGE" >&2; exit 2; }
rootfs=$(cd "$1" && pwd) image=$2
: "${SOURCE_DATE_EPOCH:?SOURCE_DATE_EPOCH must be set (seconds since 1970)}"
BOOT_MB=${BOOT_MB:-256}
ROOT_MB=${ROOT_MB:-1536}
BOOT_VOLID=${BOOT_VOLID:-A0D17F10}
ROOT_UUID=${ROOT_UUID:-5f1e6a2c-4b8d-4e59-9a0f-0a0d17f10001}
for tool in mkfs.vfat mcopy mkfs.ext4 debugfs sfdisk; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is missing (dosfstools, mtools, e2fsprogs, fdisk)" >&2; exit 1; }
done
[ -d "$rootfs/boot/firmware" ] || { echo "$0: $rootfs/boot/firmware is missing" >&2; exit 1; }

work=$(mktemp -d "$(dirname "$image")/.assemble.XXXXXX")
# Outside the tree (it must not end up on the root partition), on the same file system.
firmware_aside="$(dirname "$rootfs")/.$(basename "$rootfs").firmware.assemble"
restore() {
  if [ -d "$firmware_aside" ]; then
    rmdir "$rootfs/boot/firmware" 2>/dev/null || true
    mv "$firmware_aside" "$rootfs/boot/firmware"
  fi
  rm -rf "$work"
}
trap restore EXIT

find "$rootfs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# Boot partition.
mkfs.vfat -C -n RASPIFIRM -i "$BOOT_VOLID" --invariant "$work/boot.img" $((BOOT_MB * 1024)) >/dev/null
if [ -n "$(ls -A "$rootfs/boot/firmware")" ]; then
  MTOOLS_SKIP_CHECK=1 mcopy -s -m -i "$work/boot.img" "$rootfs"/boot/firmware/* ::/
fi

# Root partition: the tree without the boot partition's files, which live on the FAT one.
mv "$rootfs/boot/firmware" "$firmware_aside"
mkdir "$rootfs/boot/firmware"
touch -h -d "@$SOURCE_DATE_EPOCH" "$rootfs/boot/firmware" "$rootfs/boot"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -L RASPIROOT -U "$ROOT_UUID" \
  -E "hash_seed=$ROOT_UUID,root_owner=0:0" -d "$rootfs" "$work/root.img" "${ROOT_MB}M" >/dev/null
# One `sif` per path (debugfs looks the last component up without following a symlink; in its
# quoted words a quote is written twice, a backslash is literal).
(cd "$rootfs" && find . -printf '%P\n') |
  awk -v t="$SOURCE_DATE_EPOCH" '{ gsub(/"/, "\"\""); print "sif \"/" $0 "\" ctime @" t }' \
    >"$work/ctime.cmds"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f "$work/ctime.cmds" "$work/root.img" \
  >"$work/debugfs.log" 2>&1
# debugfs echoes each command; anything else is an error.
if grep -v '^debugfs [0-9.]* (\|^debugfs: sif ' "$work/debugfs.log" | grep -q .; then
  echo "$0: debugfs could not set every ctime:" >&2
  grep -v '^debugfs [0-9.]* (\|^debugfs: sif ' "$work/debugfs.log" | head -n 5 >&2
  exit 1
fi
rmdir "$rootfs/boot/firmware"
mv "$firmware_aside" "$rootfs/boot/firmware"

# The disk.
rm -f "$image"
truncate -s "$((4 + BOOT_MB + ROOT_MB))M" "$image"
sfdisk --quiet "$image" <<EOF
label: dos
label-id: 0x${BOOT_VOLID}
start=4MiB, size=${BOOT_MB}MiB, type=c
start=$((4 + BOOT_MB))MiB, size=${ROOT_MB}MiB, type=83
EOF
dd if="$work/boot.img" of="$image" bs=1M seek=4 conv=notrunc status=none
dd if="$work/root.img" of="$image" bs=1M seek=$((4 + BOOT_MB)) conv=notrunc status=none
