# Shared by scripts/run and scripts/test: install what the build needs, once.
# Debian packages the workspace builds against today (later issues add GStreamer, FFmpeg...).
MCM_DEBIAN_PACKAGES="gcc pkg-config protobuf-compiler iproute2 libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav"

ensure_debian_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "mcm: missing Debian packages: ${missing[*]}" >&2
        echo "mcm: run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "mcm: installing ${missing[*]} (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "mcm: no Rust toolchain: install Rust 1.85 or newer (rustup.rs, or Debian's cargo)" >&2
        exit 1
    fi
}

ensure_build_deps() {
    ensure_debian_packages $MCM_DEBIAN_PACKAGES
    ensure_rust
}
