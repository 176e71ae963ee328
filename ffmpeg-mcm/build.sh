#!/usr/bin/env bash
# Builds FFmpeg with mcm's devices (-f mcm, mcm_audio_pcm16, mcm_audio_pcm24) and prints
# the path of the resulting `ffmpeg` binary as its last line.
#
#   ffmpeg-mcm/build.sh [5.1|7.1]      (default 7.1)
#
# FFmpeg comes from Debian's source packages: 5.1 from Debian 12 (bookworm), 7.1 from
# Debian 13 (trixie). Debian's default sources list only binaries, so this adds deb-src
# entries (for Debian 13 a deb-src entry only: no binary package ever comes from it). The
# source is patched (patches/ffmpeg-<series>-mcm.patch plus libavdevice/mcm.c), configured
# lean (the formats, codecs and filters mcm's tests use; no external codec libraries, no
# assembly) and built. The result is cached outside the repository, in
# ${MCM_CACHE_DIR:-~/.cache/mcm}/ffmpeg/<Debian version>-<hash of patch, mcm.c and this
# script>/, so a second run is a no-op. libmcm_dp (MCM's C API, built from this workspace)
# is installed beside it each run; ffmpeg finds it through its rpath.
set -euo pipefail
series="${1:-7.1}"
case "$series" in
5.1 | 7.1) ;;
*)
    echo "usage: ffmpeg-mcm/build.sh [5.1|7.1]" >&2
    exit 2
    ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${MCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mcm}/ffmpeg"
mkdir -p "$cache"
# One build at a time (tests may ask for both versions at once).
exec 9>"$cache/.lock"
flock 9

# Progress goes to the terminal's stderr (fd 3) even from steps whose output is logged.
exec 3>&2
say() { printf 'build.sh: %s\n' "$*" >&3; }
# step DESCRIPTION COMMAND...: runs a long step, then says how long it took (or that it failed).
step() {
    local what="$1" start=$SECONDS rc=0
    shift
    say "$what ..."
    "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        say "$what: FAILED (exit $rc) after $((SECONDS - start)) s"
        return "$rc"
    fi
    say "$what: done in $((SECONDS - start)) s"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "needs root for: $*"
        exit 1
    fi
}

need_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    step "installing ${missing[*]} (apt-get)" as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq "${missing[@]}" >&2
}

# deb-src entries: Debian 12 and its security updates, and Debian 13 for 7.1 (sources only).
sources=/etc/apt/sources.list.d/mcm-deb-src.sources
want_sources() {
    cat <<EOF
# Added by mcm's ffmpeg-mcm/build.sh: Debian source packages only (deb-src), for FFmpeg 5.1
# (Debian 12) and 7.1 (Debian 13). No binary package comes from these entries.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $1
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

ffmpeg_version() {
    apt-cache showsrc ffmpeg 2>/dev/null | sed -n 's/^Version: //p' | grep "^7:${series//./\\.}\." |
        sort -V | tail -n1
}

need_packages dpkg-dev pkg-config gcc make xz-utils patch
suites="bookworm"
if [ "$series" = 7.1 ] || grep -qs "trixie" "$sources"; then
    suites="bookworm trixie"
fi
if [ "$(want_sources "$suites")" != "$(cat "$sources" 2>/dev/null)" ]; then
    want_sources "$suites" | as_root tee "$sources" >/dev/null
    step "apt-get update (deb-src: $suites)" as_root apt-get update -qq
elif [ -z "$(ffmpeg_version)" ]; then
    step "apt-get update" as_root apt-get update -qq
fi
version="$(ffmpeg_version)"
[ -n "$version" ] || {
    say "no FFmpeg $series source package in the apt sources"
    exit 1
}
upstream="${version#7:}"
upstream="${upstream%%-*}"
key="$(cat "$here/patches/ffmpeg-$series-mcm.patch" "$here/libavdevice/mcm.c" "$here/build.sh" |
    sha256sum | cut -c1-12)"
dest="$cache/${version#7:}-$key"
prefix="$cache/libmcm_dp"

# libmcm_dp: installed each run (a no-op build when nothing changed).
step "libmcm_dp (cargo build --release -p mcm-dp)" bash "$here/install.sh" "$prefix" >/dev/null

if [ -x "$dest/bin/ffmpeg" ]; then
    say "FFmpeg $version with mcm: cached in $dest"
    echo "$dest/bin/ffmpeg"
    exit 0
fi

work="$cache/work-$series"
rm -rf "$work"
mkdir -p "$work" "$cache/downloads"
(
    cd "$cache/downloads"
    if ! ls ffmpeg_"${version#7:}".dsc >/dev/null 2>&1; then
        step "downloading ffmpeg $version (Debian source package)" \
            apt-get source --download-only -qq "ffmpeg=$version" 2>/dev/null
    fi
)
step "unpacking ffmpeg $version" dpkg-source -x --no-check "$cache/downloads/ffmpeg_${version#7:}.dsc" "$work/src" >/dev/null
cd "$work/src"
step "patching (patches/ffmpeg-$series-mcm.patch, libavdevice/mcm.c)" patch -p1 -s <"$here/patches/ffmpeg-$series-mcm.patch"
cp "$here/libavdevice/mcm.c" libavdevice/mcm.c

configure_flags=(
    --prefix="$dest"
    --disable-everything --disable-autodetect --disable-doc --disable-x86asm
    --disable-ffplay --disable-ffprobe --enable-ffmpeg
    --enable-avdevice --enable-avfilter --enable-swscale --enable-swresample
    --enable-mcm
    --enable-indev=mcm,mcm_audio_pcm16,mcm_audio_pcm24,lavfi
    --enable-outdev=mcm,mcm_audio_pcm16,mcm_audio_pcm24
    --enable-protocol=file,pipe,udp,rtp
    --enable-demuxer=mov,rawvideo,wav,pcm_s16be,pcm_s24be,pcm_s16le,sdp,rtp
    --enable-muxer=framemd5,framecrc,md5,null,rawvideo,wav,pcm_s16be,pcm_s24be,pcm_s16le
    --enable-decoder=h264,aac,rawvideo,wrapped_avframe,bitpacked,pcm_s16be,pcm_s24be,pcm_s16le,pcm_f32le
    --enable-encoder=rawvideo,wrapped_avframe,pcm_s16be,pcm_s24be,pcm_s16le
    --enable-parser=h264,aac
    --enable-filter=buffer,buffersink,abuffer,abuffersink,scale,format,aformat,aresample,null,anull,testsrc2,sine,trim,atrim,setpts,asetpts,fps
)
step "configuring FFmpeg $upstream (lean, --enable-mcm)" env PKG_CONFIG_PATH="$prefix/lib/pkgconfig" \
    ./configure "${configure_flags[@]}" >"$work/configure.log" 2>&1 ||
    {
        tail -n 30 ffbuild/config.log >&2
        exit 1
    }
step "building FFmpeg $upstream (make -j$(nproc))" make -s -j"$(nproc)" ffmpeg >"$work/make.log" 2>&1 ||
    {
        tail -n 40 "$work/make.log" >&2
        exit 1
    }
mkdir -p "$dest/bin"
cp ffmpeg "$dest/bin/ffmpeg.tmp"
mv "$dest/bin/ffmpeg.tmp" "$dest/bin/ffmpeg"
cd "$cache"
rm -rf "$work"
say "FFmpeg $version with mcm: built into $dest"
echo "$dest/bin/ffmpeg"
