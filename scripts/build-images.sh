#!/usr/bin/env bash
# Static binaries and container images for linux/amd64 and linux/arm64, without a Docker
# daemon and without a cross gcc:
#
# * binaries: rustup's musl targets, linked by rust-lld against Rust's self-contained musl;
#   the few C sources (ring, bundled SQLite) compiled by clang for the target, against
#   Debian's musl headers (for arm64: musl-dev_*_arm64.deb, fetched once, checked against a
#   pinned SHA-256 and unpacked under target/tools, nothing installed). .cargo/config.toml
#   holds the linker settings. The agent uses the release-agent profile (panic = abort).
# * images: one FROM-scratch image per binary and architecture (the static binary, the CA
#   certificates for TLS, a non-root numeric user, OCI labels source/version/revision),
#   assembled into one multi-arch OCI index per binary with buildah (Debian's package, its
#   own storage under target/images, vfs driver: no daemon, no root-only mounts), written as
#   an OCI layout (target/images/oci, tags auditflow-<binary>) and an OCI archive per binary.
#   Timestamps come from SOURCE_DATE_EPOCH (default: the last commit's time), so the same
#   inputs give the same digests.
#
#   scripts/build-images.sh                       every binary, both architectures
#   BINARIES="agent aggregator" ARCHES=arm64 scripts/build-images.sh
#   BINARIES=agent ARCHES=arm64 scripts/build-images.sh --binaries-only
#       only the binaries, copied to target/images/bin/ (what containers/*.Containerfile run)
#   AUDITABLE=1 scripts/build-images.sh           binaries built with `cargo auditable`
#   CHECK_BUILD=1 scripts/build-images.sh         the test command's build: the release profile
#       without LTO and with 16 codegen units, and the agent in the same cargo invocation as
#       the others (the release profile, so panic = unwind: its dependencies are compiled once
#       per target instead of twice). The same code, optimised the same way, checked the same
#       way, in well under half the time on two cores (fat LTO with one codegen unit runs one
#       thread per binary for minutes); what ships and what docs/benchmarks.md measures is the
#       build without it. The size table says which build it measured.
#
# Ends with a size table and, as its last line,
# `images: agent_arm64_bytes=<n> aggregator_arm64_bytes=<m>` (compressed image sizes; needs
# both in BINARIES and arm64 in ARCHES).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT="$ROOT/target/images"
TOOLS="$ROOT/target/tools"
BINARIES=${BINARIES:-agent broker aggregator dashboard}
BINARIES_ONLY=""
[ "${1:-}" != --binaries-only ] || BINARIES_ONLY=1
ARCHES=${ARCHES:-amd64 arm64}
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="$HOME/.cargo/bin:$PATH"

# Debian bookworm's musl-dev for arm64 (headers for SQLite's C); pinned.
MUSL_ARM64_DEB=musl-dev_1.2.3-1_arm64.deb
MUSL_ARM64_URL="http://deb.debian.org/debian/pool/main/m/musl/$MUSL_ARM64_DEB"
MUSL_ARM64_SHA256=55c2ca4bc3041c8ed8ac7dc3ef6080d9551a21650568b2fd7610b59eaf98a4f4

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE=$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
BUILD_KIND="release build"
if [ -n "${CHECK_BUILD:-}" ]; then
  # Cargo's profile overrides from the environment; release-agent inherits them.
  export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
  BUILD_KIND="check build (CHECK_BUILD=1: no LTO, 16 codegen units; not the shipped sizes)"
fi

log() { echo "[images] $*"; }

apt_install() {
  log "installing $* (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

triple() {
  case $1 in
    amd64) echo x86_64-unknown-linux-musl ;;
    arm64) echo aarch64-unknown-linux-musl ;;
    *) echo "unknown architecture $1" >&2; return 64 ;;
  esac
}

setup() {
  local need=() arch
  command -v clang >/dev/null || need+=(clang)
  command -v llvm-ar >/dev/null || need+=(llvm)
  [ -n "$BINARIES_ONLY" ] || command -v buildah >/dev/null || need+=(buildah)
  [ -f /usr/include/x86_64-linux-musl/stdio.h ] || need+=(musl-dev)
  [ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
  command -v python3 >/dev/null || need+=(python3)
  command -v curl >/dev/null || need+=(curl)
  [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
  for arch in $ARCHES; do
    rustup target list --installed | grep -qx "$(triple "$arch")" || rustup target add "$(triple "$arch")"
  done
  local sysroot="$TOOLS/musl-arm64"
  if [[ " $ARCHES " == *" arm64 "* ]] && ! [ -f "$sysroot/usr/include/aarch64-linux-musl/stdio.h" ]; then
    mkdir -p "$TOOLS"
    curl -fsSL --retry 3 -o "$TOOLS/$MUSL_ARM64_DEB" "$MUSL_ARM64_URL"
    echo "$MUSL_ARM64_SHA256  $TOOLS/$MUSL_ARM64_DEB" | sha256sum -c --quiet
    rm -rf "$sysroot"
    dpkg-deb -x "$TOOLS/$MUSL_ARM64_DEB" "$sysroot"
  fi
}

# The C compiler flags per target: clang for the target, musl's headers.
export CFLAGS_x86_64_unknown_linux_musl="--target=x86_64-linux-musl -isystem /usr/include/x86_64-linux-musl"
export CFLAGS_aarch64_unknown_linux_musl="--target=aarch64-linux-musl -isystem $TOOLS/musl-arm64/usr/include/aarch64-linux-musl"

# Where a binary ends up.
bin_path() {
  local bin=$1 arch=$2 profile=release
  [ "$bin" = agent ] && [ -z "${CHECK_BUILD:-}" ] && profile=release-agent
  echo "$ROOT/target/$(triple "$arch")/$profile/auditflow-$bin"
}

build_binaries() {
  local arch t others=() names=() b build=(build)
  # AUDITABLE=1 (the release workflow): cargo-auditable embeds each binary's dependency list,
  # so that `cargo audit bin`, syft or trivy can read it back from a shipped binary.
  if [ -n "${AUDITABLE:-}" ]; then
    command -v cargo-auditable >/dev/null || {
      echo "AUDITABLE=1 needs cargo-auditable (cargo install --locked cargo-auditable)" >&2
      return 1
    }
    build=(auditable build)
  fi
  for b in $BINARIES; do [ "$b" = agent ] || { others+=(-p "$b"); names+=("$b"); }; done
  if [ -n "${CHECK_BUILD:-}" ]; then
    # One invocation for all four, whichever BINARIES asks for: the same features unify every
    # time, so a later call for one binary finds it built and byte-identical.
    for arch in $ARCHES; do
      t=$(triple "$arch")
      log "building agent broker aggregator dashboard for $t (check build)"
      cargo "${build[@]}" --locked --quiet --release --target "$t" -p agent -p broker -p aggregator -p dashboard
    done
    return
  fi
  for arch in $ARCHES; do
    t=$(triple "$arch")
    if [[ " $BINARIES " == *" agent "* ]]; then
      log "building agent for $t (release-agent)"
      cargo "${build[@]}" --locked --quiet --profile release-agent --target "$t" -p agent
    fi
    if [ ${#others[@]} -gt 0 ]; then
      log "building ${names[*]} for $t (release)"
      cargo "${build[@]}" --locked --quiet --release --target "$t" "${others[@]}"
    fi
  done
}

bh() { buildah --root "$OUT/storage" --runroot "$OUT/run" --storage-driver vfs "$@"; }

build_images() {
  mkdir -p "$OUT"
  local bin arch ctr image index
  for bin in $BINARIES; do
    index="localhost/auditflow-$bin:$VERSION"
    bh manifest rm "$index" >/dev/null 2>&1 || bh rmi -f "$index" >/dev/null 2>&1 || true
    bh manifest create "$index" >/dev/null
    for arch in $ARCHES; do
      image="localhost/auditflow-$bin:$VERSION-$arch"
      bh rmi -f "$image" >/dev/null 2>&1 || true
      ctr=$(bh from --arch "$arch" --os linux scratch)
      bh copy --chown 0:0 --chmod 0755 "$ctr" "$(bin_path "$bin" "$arch")" "/usr/local/bin/auditflow-$bin" >/dev/null
      bh copy --chown 0:0 --chmod 0644 "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
      local variant=()
      [ "$arch" = arm64 ] && variant=(--variant v8)
      bh config --os linux --arch "$arch" "${variant[@]}" --user 65532:65532 --workingdir / \
        --entrypoint "[\"/usr/local/bin/auditflow-$bin\"]" --cmd '[]' \
        --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        --label "org.opencontainers.image.title=auditflow-$bin" \
        --label "org.opencontainers.image.source=$SOURCE" \
        --label "org.opencontainers.image.version=$VERSION" \
        --label "org.opencontainers.image.revision=$REVISION" \
        --label "org.opencontainers.image.licenses=Apache-2.0" \
        --created-by "scripts/build-images.sh" "$ctr"
      bh commit --quiet --rm --format oci --timestamp "$SOURCE_DATE_EPOCH" "$ctr" "$image" >/dev/null
      bh manifest add "$index" "$image" >/dev/null
    done
    rm -f "$OUT/auditflow-$bin.oci.tar"
    bh manifest push --quiet --all --format oci "$index" "oci-archive:$OUT/auditflow-$bin.oci.tar:auditflow-$bin:$VERSION"
    bh manifest push --quiet --all --format oci "$index" "oci:$OUT/oci:auditflow-$bin"
  done
}

# Binary size and compressed image size (layers + config + manifest) per binary and arch.
size_table() {
  python3 - "$OUT/oci" "$ROOT" "$BINARIES" "$ARCHES" "$(for b in $BINARIES; do for a in $ARCHES; do echo "$b $a $(stat -c %s "$(bin_path "$b" "$a")")"; done; done)" "$BUILD_KIND" <<'PY'
import json, pathlib, sys
layout, root, binaries, arches, sizes = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(), sys.argv[4].split(), sys.argv[5]
binary = {(b, a): int(n) for b, a, n in (l.split() for l in sizes.splitlines())}
def blob(digest):
    algo, hexd = digest.split(":")
    return layout / "blobs" / algo / hexd
top = json.loads((layout / "index.json").read_text())
image = {}
digests = {}
for m in top["manifests"]:
    tag = m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
    if not tag.startswith("auditflow-"):
        continue
    bin_ = tag[len("auditflow-"):]
    digests[bin_] = m["digest"]
    index = json.loads(blob(m["digest"]).read_text())
    for im in index["manifests"]:
        arch = im["platform"]["architecture"]
        man = json.loads(blob(im["digest"]).read_text())
        image[(bin_, arch)] = im["size"] + man["config"]["size"] + sum(l["size"] for l in man["layers"])
print(sys.argv[6])
print()
print("| binary | arch | stripped binary bytes | compressed image bytes | image/binary |")
print("|---|---|---:|---:|---:|")
for b in binaries:
    for a in arches:
        n, i = binary[(b, a)], image[(b, a)]
        print(f"| auditflow-{b} | {a} | {n:,} | {i:,} | {i / n:.2f} |")
print()
for b in binaries:
    print(f"index auditflow-{b}: {digests[b]}")
if "agent" in binaries and "aggregator" in binaries and "arm64" in arches:
    print()
    print(f"images: agent_arm64_bytes={image[('agent', 'arm64')]} aggregator_arm64_bytes={image[('aggregator', 'arm64')]}")
PY
}

setup
build_binaries
if [ -n "$BINARIES_ONLY" ]; then
  # One architecture per call (a container build's TARGETARCH): target/images/bin/auditflow-*.
  mkdir -p "$OUT/bin"
  for bin in $BINARIES; do
    for arch in $ARCHES; do cp "$(bin_path "$bin" "$arch")" "$OUT/bin/auditflow-$bin"; done
  done
  exit 0
fi
build_images
log "OCI layout: $OUT/oci; archives: $OUT/auditflow-*.oci.tar"
size_table
