#!/usr/bin/env bash
# Puts k3s into a node image's root file system, so that `mode = k3s-agent` in auditflow.txt
# joins the cluster on the first boot:
#
#   pi-image/add-k3s.sh ROOTFS K3S_BINARY
#
# K3S_BINARY is the arm64 k3s release binary (k3s-arm64 from the k3s release page; it cannot
# be downloaded on the build machine here, so it is given). It must be the release the
# Ansible roles pin: its SHA-256 is checked against k3s_binary_sha256_by_arch.arm64 in
# ansible/roles/k3s_binary/defaults/main.yml (K3S_SHA256 overrides the digest, for tests
# with a stand-in binary). Installs /usr/local/bin/k3s with the kubectl, crictl and ctr
# links, and k3s-agent.service rendered from the k3s_agent role's template, so a node from
# the image and a node set up with Ansible run k3s the same way. The unit is not enabled:
# auditflow-firstboot enables it once it has written /etc/rancher/k3s/config.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# = 2 ] || { echo "usage: $0 ROOTFS K3S_BINARY" >&2; exit 2; }
rootfs=$1 binary=$2
defaults=ansible/roles/k3s_binary/defaults/main.yml
template=ansible/roles/k3s_agent/templates/k3s-agent.service.j2

version=$(sed -n 's/^k3s_binary_version: *//p' "$defaults")
pinned=$(awk '/^k3s_binary_sha256_by_arch:/ { on = 1; next } on && /^ *arm64:/ { print $2; exit }' "$defaults")
want=${K3S_SHA256:-$pinned}
[ -n "$version" ] && [ -n "$want" ] || { echo "$0: no pinned k3s version or arm64 digest in $defaults" >&2; exit 1; }
[ -f "$binary" ] || { echo "$0: $binary: no such file" >&2; exit 1; }
got=$(sha256sum "$binary" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  echo "$0: $binary has SHA-256 $got, not $want (k3s $version, arm64, as the Ansible roles pin it)" >&2
  exit 1
fi

install -D -m 0755 "$binary" "$rootfs/usr/local/bin/k3s"
for tool in kubectl crictl ctr; do
  ln -sfn k3s "$rootfs/usr/local/bin/$tool"
done
# The role's template, with its three variables filled in.
sed -e 's/{{ *ansible_managed *}}/Installed by pi-image\/add-k3s.sh from the k3s_agent role'"'"'s template/' \
  -e "s/{{ *k3s_binary_version *}}/$version/" \
  -e 's|{{ *k3s_binary_path *}}|/usr/local/bin/k3s|' \
  "$template" >"$rootfs/etc/systemd/system/k3s-agent.service"
if grep -q '{{\|{%' "$rootfs/etc/systemd/system/k3s-agent.service"; then
  echo "$0: $template uses template syntax this script does not fill in" >&2
  exit 1
fi
echo "k3s $version installed into $rootfs"
