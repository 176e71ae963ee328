//! Generates `mesh_dp.h` (MCM's C API header) from the crate with cbindgen, into
//! `$OUT_DIR/include`, and gives the shared library MCM's soname.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("include");
    std::fs::create_dir_all(&out).expect("OUT_DIR is writable");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("ffmpeg-mcm/cbindgen.toml is valid");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("mesh_dp.h generates")
        .write_to_file(out.join("mesh_dp.h"));
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmcm_dp.so.25");
    println!("cargo:rerun-if-changed=src/lib.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
}
