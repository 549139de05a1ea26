#!/usr/bin/env bash
# Build the AppImage type-2 runtime (the program at the head of every AppImage) from source, for
# machines that cannot download the type2-runtime project's own runtime-x86_64 but have Debian's
# packages: a static program that mounts the image with FUSE 3 (or extracts it with
# --appimage-extract-and-run) and starts its AppRun.
#
#   apt-get install squashfs-tools libfuse3-dev libzstd-dev zlib1g-dev autoconf automake libtool
#   bash packaging/build_appimage_runtime.sh SQUASHFUSE_SRC TYPE2_RUNTIME_SRC [OUT]
#
# SQUASHFUSE_SRC is a source tree of squashfuse (0.5 or newer), TYPE2_RUNTIME_SRC one of the
# AppImage type2-runtime project; OUT defaults to build/appimage-runtime-x86_64. Upstream builds
# against a patched libfuse that finds fusermount through $FUSERMOUNT_PROG; Debian's libfuse3
# looks for fusermount3 in /usr/bin and on PATH, which FUSE 3 systems have.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 1
fi
squashfuse_src="$(readlink -f "$1")"
runtime_src="$(readlink -f "$2")"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${3:-$root/build/appimage-runtime-x86_64}"
work="$(mktemp -d -t kdstudio-runtime-XXXXXX)"
trap 'rm -rf "$work"' EXIT

echo "squashfuse, static, zlib and zstd only (what mksquashfs -comp zstd needs)"
cp -R "$squashfuse_src" "$work/squashfuse"
(
    cd "$work/squashfuse"
    ./autogen.sh
    CFLAGS="-Os -ffunction-sections -fdata-sections" ./configure --prefix="$work/prefix" \
        --disable-shared --enable-static --without-lzo --without-lz4 --without-xz --disable-demo
    make -j"$(nproc)"
    make install
    # The runtime uses squashfuse's low-level FUSE functions, declared in headers it does not install.
    cp ./*.h "$work/prefix/include/squashfuse/"
) > "$work/squashfuse.log" 2>&1 || { tail -30 "$work/squashfuse.log"; exit 1; }

echo "runtime"
(
    cd "$runtime_src/src/runtime"
    gcc -std=gnu99 -Os -D_FILE_OFFSET_BITS=64 -DGIT_COMMIT="\"$(cat version)\"" -T data_sections.ld \
        -ffunction-sections -fdata-sections -Wl,--gc-sections -static \
        -I"$work/prefix/include/squashfuse" -I"$work/prefix/include" -I/usr/include/fuse3 \
        runtime.c -L"$work/prefix/lib" -lsquashfuse -lsquashfuse_ll -lzstd -lz -lfuse3 -lpthread \
        -o "$work/runtime"
)
strip --strip-debug --strip-unneeded "$work/runtime"
# The magic bytes that say "AppImage type 2", after strip (which would drop them).
printf 'AI\x02' | dd of="$work/runtime" bs=1 count=3 seek=8 conv=notrunc status=none
mkdir -p "$(dirname "$out")"
cp "$work/runtime" "$out"
echo "$out: $(stat -c %s "$out") bytes"
