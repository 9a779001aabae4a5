#!/usr/bin/env bash
# Builds cohort's container image from this checkout, offline, with no daemon and no registry:
# the release binary (stripped), the C libraries it links (glibc: its resolver reads the pod's
# /etc/resolv.conf, search domains and ndots included), CA certificates and a non-root user go
# into a context directory, and buildah builds image/Containerfile FROM scratch.
#
# Usage: image/build.sh [--tag REF] [--archive FILE] [--binary PATH]
#   --tag REF       the image reference (default localhost/cohort:<version in Cargo.toml>)
#   --binary PATH   put this cohort binary in instead of building the release one (tests use
#                   the binary they were built with)
#   --archive FILE  also write the image as a docker-archive tarball (e.g. to `ctr images import`
#                   it on a node, or `podman load` it), and say what it weighs compressed
# Environment: CARGO_TARGET_DIR is honoured; BUILDAH_ARGS adds global buildah options (e.g. a
# storage root: "--root DIR --runroot DIR --storage-driver vfs").
# Needs: cargo, buildah (Debian: apt-get install -y buildah), strip and ldd (binutils, libc-bin).
set -euo pipefail
cd "$(dirname "$0")/.."
# What the context holds must be readable by the image's non-root user whatever the caller's
# umask: COPY keeps the modes it finds.
umask 022

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag="localhost/cohort:${version}"
archive=""
binary=""
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --archive) archive="$2"; shift 2 ;;
        --binary) binary="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for tool in cargo buildah strip ldd; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is not installed (see --help)" >&2; exit 1; }
done

started=$(date +%s)
if [ -n "$binary" ]; then
    bin="$binary"
    [ -x "$bin" ] || { echo "build.sh: --binary $bin is not an executable file" >&2; exit 1; }
else
    cargo build --release --locked -p cohort
    bin="${CARGO_TARGET_DIR:-$PWD/target}/release/cohort"
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
root="$context/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$context/home/nonroot"
chmod 1777 "$root/tmp"
strip -o "$root/usr/local/bin/cohort" "$bin"

# The libraries the dynamic loader will look for, at the paths ldd resolves them to; one this
# machine lacks would make an image that cannot start.
if ldd "$bin" | grep -q 'not found'; then
    echo "build.sh: $bin needs libraries this machine lacks:" >&2
    ldd "$bin" | grep 'not found' >&2
    exit 1
fi
ldd "$bin" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
# Names from /etc/hosts first, then DNS, as in any distribution image.
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
cp image/Containerfile "$context/Containerfile"

# shellcheck disable=SC2086
buildah ${BUILDAH_ARGS:-} build --quiet --isolation chroot \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.source=https://github.com/cohort-dev/cohort" \
    -t "$tag" -f "$context/Containerfile" "$context" >/dev/null

unpacked=$(du -sb "$root" | cut -f1)
echo "built $tag in $(( $(date +%s) - started )) s: binary $(stat -c %s "$root/usr/local/bin/cohort") bytes, image $unpacked bytes unpacked"
if [ -n "$archive" ]; then
    rm -f "$archive"
    # shellcheck disable=SC2086
    buildah ${BUILDAH_ARGS:-} push --quiet "$tag" "docker-archive:$archive:$tag" >/dev/null
    echo "wrote $archive: $(stat -c %s "$archive") bytes, $(gzip -c "$archive" | wc -c) bytes compressed (gzip)"
fi
