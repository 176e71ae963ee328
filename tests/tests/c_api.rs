//! MCM's C API (libmcm_dp, `mesh_dp.h`): a C program, compiled here against the installed
//! header and library through pkg-config, talks to a real media proxy.

use mcm_tests::{libmcm_dp_flags, start_proxy, Proc};

#[test]
fn a_c_program_sends_and_receives_through_mesh_dp_h() {
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let exe = dir.path().join("mesh_dp_test");
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ffmpeg-mcm/tests/mesh_dp_test.c");
    let out = std::process::Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-o"])
        .arg(&exe)
        .arg(&source)
        .args(libmcm_dp_flags())
        .arg("-lpthread")
        .output()
        .expect("gcc");
    assert!(
        out.status.success(),
        "compiling {}: {}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["c-api-test", "60"])
        .env("MCM_PROXY_SOCKET", &proxy.unix);
    let (status, log) = Proc::spawn("mesh_dp_test", &mut cmd).finish();
    assert!(status.success(), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("mesh_dp_test: OK, 60 of 60 frames")),
        "{log:?}"
    );
}
