#!/usr/bin/env bash
# Builds the live555 RTSP server used by tests/interop_live555.rs:
#
#   1. downloads live555's sources as the `liblivemedia` sdist from PyPI,
#      pinned by version and sha256 (nothing from live555 is committed);
#   2. builds live555's four static libraries the way its own genMakefiles
#      does (Makefile = Makefile.head + a platform config + Makefile.tail in
#      each library directory; the sdist ships the .head/.tail pieces but not
#      genMakefiles or config.linux, so the linux config is written here);
#   3. links tests/support/live555_h264_server.cpp against them.
#
# Output: $CARGO_TARGET_DIR/live555/live555_h264_server (default target/),
# printed as the last line of stdout. Idempotent: the libraries are kept and
# the server is relinked only when its source is newer than the binary; when
# both are current it does nothing. Concurrent runs serialise on a lock.
# Needs curl, g++, make. No OpenSSL (the
# libraries are built with NO_OPENSSL, which only drops RTSPS/SRTP).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"

# live555 2024.06.26 (liveMedia_version.hh) packaged as liblivemedia 1.0.5.
version=1.0.5
sha256=564f65501ea5e823e5c53b1847ce3f41bd7b71ee2e9f3ba154a7e955817dfb48
url=https://files.pythonhosted.org/packages/61/1b/ae7a8a561bd212ea2b6c7f0b6a9f9b4d7380dcf523735b2ee14697d67cab/liblivemedia-$version.tar.gz

out="${CARGO_TARGET_DIR:-$repo/target}/live555"
server="$out/live555_h264_server"
source="$repo/tests/support/live555_h264_server.cpp"
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

if [ -x "$server" ] && [ "$server" -nt "$source" ]; then
    echo "$server"
    exit 0
fi

src="$out/liblivemedia-$version"
libs=(UsageEnvironment groupsock BasicUsageEnvironment liveMedia)
if [ ! -f "$src/.built" ]; then
    tarball="$out/liblivemedia-$version.tar.gz"
    if ! echo "$sha256  $tarball" | sha256sum -c --status 2>/dev/null; then
        echo "==> live555: downloading liblivemedia $version from PyPI" >&2
        curl -sSfL --retry 3 -o "$tarball.part" "$url"
        if ! echo "$sha256  $tarball.part" | sha256sum -c --status; then
            echo "live555: $url does not have sha256 $sha256" >&2
            rm -f "$tarball.part"
            exit 1
        fi
        mv "$tarball.part" "$tarball"
    fi
    rm -rf "$src"
    tar -xzf "$tarball" -C "$out"
    # The linux platform config genMakefiles would append (no OpenSSL).
    cat >"$src/config.rtsnap" <<'EOF'
COMPILE_OPTS =		$(INCLUDES) -I. -O2 -DSOCKLEN_T=socklen_t -D_LARGEFILE_SOURCE=1 -D_FILE_OFFSET_BITS=64 -DNO_OPENSSL=1 -w
C =			c
C_COMPILER =		cc
C_FLAGS =		$(COMPILE_OPTS) $(CPPFLAGS) $(CFLAGS)
CPP =			cpp
CPLUSPLUS_COMPILER =	c++
CPLUSPLUS_FLAGS =	$(COMPILE_OPTS) -std=c++20 -DBSD=1 $(CPPFLAGS) $(CXXFLAGS)
OBJ =			o
LINK =			c++ -o
LINK_OPTS =		-L. $(LDFLAGS)
CONSOLE_LINK_OPTS =	$(LINK_OPTS)
LIBRARY_LINK =		ar cr 
LIBRARY_LINK_OPTS =
LIB_SUFFIX =		a
LIBS_FOR_CONSOLE_APPLICATION =
LIBS_FOR_GUI_APPLICATION =
EXE =
EOF
    echo "==> live555: building ${libs[*]} (make -j$(nproc))" >&2
    start=$SECONDS
    for d in "${libs[@]}"; do
        cat "$src/$d/Makefile.head" "$src/config.rtsnap" "$src/$d/Makefile.tail" >"$src/$d/Makefile"
        make -s -C "$src/$d" -j"$(nproc)" >&2
    done
    echo "==> live555: libraries built in $((SECONDS - start)) s" >&2
    touch "$src/.built"
fi

includes=()
for d in "${libs[@]}"; do includes+=(-I"$src/$d/include"); done
c++ -std=c++20 -O2 -w -DSOCKLEN_T=socklen_t -DNO_OPENSSL=1 "${includes[@]}" -o "$server.part" "$source" \
    "$src/liveMedia/libliveMedia.a" "$src/groupsock/libgroupsock.a" \
    "$src/BasicUsageEnvironment/libBasicUsageEnvironment.a" \
    "$src/UsageEnvironment/libUsageEnvironment.a"
mv "$server.part" "$server"
echo "$server"
