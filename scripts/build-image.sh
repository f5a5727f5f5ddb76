#!/usr/bin/env bash
# Builds the rafka container image: FROM scratch, one static rafka binary, non-root
# user 10001, nothing pulled from any registry.
#
#   scripts/build-image.sh                              # release static build, tag rafka:latest
#   scripts/build-image.sh --binary PATH --tag rafka:x  # package an already built static binary
#
# Without --binary it runs
#   RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu -p rafka
# (a fully static glibc binary; the musl target is not needed). The build context is a
# small temporary directory holding only deploy/image/ and the binary (debug info
# stripped when `strip` is present): the repository and target/ are never sent to
# the Docker daemon. The image is then run once (`rafka --version`) to prove it works.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_TRIPLE=x86_64-unknown-linux-gnu
TAG="rafka:latest"
BINARY=""

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "build-image: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; BINARY="$2"; shift 2 ;;
        --binary=*) BINARY="${1#*=}"; shift ;;
        --tag) [ $# -ge 2 ] || die "--tag needs a name"; TAG="$2"; shift 2 ;;
        --tag=*) TAG="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

command -v docker >/dev/null || die "docker is not on PATH"

if [ -z "$BINARY" ]; then
    command -v cargo >/dev/null || die "cargo is not on PATH (or pass --binary)"
    echo "build-image: cargo build --release --target $TARGET_TRIPLE -p rafka (static glibc)"
    (cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --target "$TARGET_TRIPLE" -p rafka --bin rafka)
    BINARY="${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET_TRIPLE/release/rafka"
fi
[ -f "$BINARY" ] && [ -x "$BINARY" ] || die "$BINARY is not an executable file"

# A dynamically linked binary would fail in the empty image with a confusing
# "no such file or directory": refuse it here, naming the fix.
if command -v readelf >/dev/null; then
    if readelf -lW "$BINARY" | grep -q 'program interpreter'; then
        die "$BINARY is dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static' --target $TARGET_TRIPLE"
    fi
fi

CONTEXT="$(mktemp -d "${TMPDIR:-/tmp}/rafka-image.XXXXXX")"
trap 'rm -rf "$CONTEXT"' EXIT
cp "$ROOT/deploy/image/Dockerfile" "$CONTEXT/"
cp -r "$ROOT/deploy/image/rootfs" "$CONTEXT/rootfs"
mkdir -p "$CONTEXT/rootfs/usr/local/bin" "$CONTEXT/data"
if command -v strip >/dev/null; then
    strip --strip-debug -o "$CONTEXT/rootfs/usr/local/bin/rafka" "$BINARY"
else
    cp "$BINARY" "$CONTEXT/rootfs/usr/local/bin/rafka"
fi
chmod 0755 "$CONTEXT/rootfs/usr/local/bin/rafka"
chmod -R go-w,a+rX "$CONTEXT/rootfs"

echo "build-image: docker build -t $TAG ($(du -sh "$CONTEXT" | cut -f1) context from $BINARY)"
docker build --quiet -t "$TAG" "$CONTEXT" >/dev/null
version="$(docker run --rm "$TAG" --version)" || die "the image $TAG does not run"
echo "build-image: $TAG runs: $version ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.1f MB", $1/1e6}'))"
