//! FFmpeg 5.1 and 7.1, patched with mcm's devices (`-f mcm`, `mcm_audio_pcm24`), through a
//! real media proxy: every frame and sample compared with a direct decode, GStreamer to
//! FFmpeg and back, and bad options refused with a clear message.
//!
//! The binaries come from `ffmpeg-mcm/build.sh` (cached; `scripts/test` builds them first and
//! passes their paths in `MCM_FFMPEG_5_1` / `MCM_FFMPEG_7_1`).

use std::path::{Path, PathBuf};
use std::process::Command;

use mcm_tests::{finish_ok, gst_launch_via, start_proxy, Proc, Proxy};

fn clip() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/media/bigbuckbunny.mp4");
    p.exists().then_some(p)
}

/// The input side of a source command: the shared clip, else a moving test pattern and a
/// tone of the same length (132 frames at 25 fps).
fn input(video: bool) -> Vec<String> {
    match clip() {
        Some(p) => vec!["-i".into(), p.display().to_string()],
        None if video => [
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=25:duration=5.28",
        ]
        .map(String::from)
        .to_vec(),
        None => [
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=997:sample_rate=48000:duration=5.28",
        ]
        .map(String::from)
        .to_vec(),
    }
}

fn ffmpeg(series: &str) -> PathBuf {
    let var = format!("MCM_FFMPEG_{}", series.replace('.', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return p.into();
    }
    use std::sync::Mutex;
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = built.iter().find(|(s, _)| s == series) {
        return p.clone();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ffmpeg-mcm/build.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(series)
        .output()
        .expect("ffmpeg-mcm/build.sh");
    assert!(
        out.status.success(),
        "build.sh {series}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("build.sh prints the path last")
            .trim(),
    );
    built.push((series.to_owned(), path.clone()));
    path
}

/// Runs ffmpeg with its messages (stderr) in the collected output, for failures to show.
fn run(ffmpeg: &Path, proxy: &Proxy, name: &str, args: &[String]) -> Proc {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec \"$0\" \"$@\" 2>&1"])
        .arg(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(args)
        .env("MCM_PROXY_SOCKET", &proxy.unix);
    Proc::spawn(name, &mut cmd)
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// `framemd5` lines: (pts, size, md5) per packet.
fn frames(log: &[String]) -> Vec<(i64, u64, String)> {
    log.iter()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (f.len() == 6).then(|| {
                (
                    f[2].parse().unwrap_or(-1),
                    f[4].parse().unwrap_or(0),
                    f[5].to_owned(),
                )
            })
        })
        .collect()
}

fn video_round_trip(series: &str) {
    let bin = ffmpeg(series);
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    for pix in ["yuv422p10le", "uyvy422", "yuv420p"] {
        let urn = format!("ff-{series}-{pix}");
        let frames_n = 50;
        // The reference: the same frames decoded and converted directly.
        let mut reference = input(true);
        reference.extend(args(&format!(
            "-an -frames:v {frames_n} -pix_fmt {pix} -c:v rawvideo -f framemd5 -"
        )));
        let want = frames(&finish_ok(run(&bin, &proxy, "reference", &reference)));
        assert_eq!(want.len(), frames_n, "{pix}: reference frames");
        // Receiver first (reliable: nothing may be lost), then the sender in real time.
        let rx = run(
            &bin,
            &proxy,
            "ffmpeg receiver",
            &args(&format!(
                "-f mcm -urn {urn} -reliable 1 -video_size 1280x720 -pixel_format {pix} -frame_rate 25 -i - -c:v copy -f framemd5 -"
            )),
        );
        mcm_tests::wait_for_group_readers(domain.path(), &urn, 1);
        let mut tx_args = args("-re");
        tx_args.extend(input(true));
        tx_args.extend(args(&format!(
            "-an -frames:v {frames_n} -pix_fmt {pix} -c:v rawvideo -f mcm -urn {urn} -reliable 1 -"
        )));
        finish_ok(run(&bin, &proxy, "ffmpeg sender", &tx_args));
        let got = frames(&finish_ok(rx));
        let hashes =
            |v: &[(i64, u64, String)]| v.iter().map(|f| (f.1, f.2.clone())).collect::<Vec<_>>();
        assert_eq!(hashes(&got), hashes(&want), "{series} {pix}: frames differ");
        let pts: Vec<i64> = got.iter().map(|f| f.0).collect();
        assert_eq!(
            pts,
            (0..frames_n as i64).collect::<Vec<_>>(),
            "{pix}: timestamps"
        );
    }
}

fn audio_round_trip(series: &str) {
    let bin = ffmpeg(series);
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    let urn = format!("ff-{series}-pcm24");
    let mut reference = input(false);
    reference.extend(args("-vn -ac 2 -ar 48000 -c:a pcm_s24be -f md5 -"));
    let want = finish_ok(run(&bin, &proxy, "reference", &reference));
    let rx = run(
        &bin,
        &proxy,
        "ffmpeg receiver",
        &args(&format!(
            "-f mcm_audio_pcm24 -urn {urn} -reliable 1 -channels 2 -sample_rate 48000 -i - -c:a copy -f md5 -"
        )),
    );
    // Started only once the receiver holds its cursor: the sender does not pace itself.
    mcm_tests::wait_for_group_readers(domain.path(), &urn, 1);
    let mut tx_args = input(false);
    tx_args.extend(args(&format!(
        "-vn -ac 2 -ar 48000 -c:a pcm_s24be -f mcm_audio_pcm24 -urn {urn} -reliable 1 -"
    )));
    finish_ok(run(&bin, &proxy, "ffmpeg sender", &tx_args));
    let got = finish_ok(rx);
    // One hash over every sample: 1 ms buffers, the last one short (never padded).
    assert!(want.iter().any(|l| l.starts_with("MD5=")), "{want:?}");
    assert_eq!(got, want, "{series}: samples differ");
}

fn gstreamer_both_ways(series: &str) {
    let bin = ffmpeg(series);
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    let socket = proxy.unix.clone();
    let caps = "video/x-raw,format=UYVY,width=320,height=240,framerate=25/1";
    let pattern = format!("videotestsrc num-buffers=40 pattern=ball ! {caps}");
    // GStreamer -> FFmpeg.
    let urn = format!("gst-to-ff-{series}");
    let rx = run(
        &bin,
        &proxy,
        "ffmpeg receiver",
        &args(&format!(
            "-f mcm -urn {urn} -reliable 1 -video_size 320x240 -pixel_format uyvy422 -frame_rate 25 -i - -c:v copy -f framemd5 -"
        )),
    );
    let tx = gst_launch_via(
        "gst sender",
        &format!("{pattern} ! tee name=t ! queue ! mcmsink urn={urn} reliable=true t. ! queue ! checksumsink hash=md5"),
        &socket,
        false,
    );
    let sent = checksums_md5(&finish_ok(tx));
    let got: Vec<String> = frames(&finish_ok(rx)).into_iter().map(|f| f.2).collect();
    assert_eq!(sent.len(), 40);
    assert_eq!(got, sent, "{series}: GStreamer -> FFmpeg frames differ");
    // FFmpeg -> GStreamer: the clip in the three formats; `mcmsrc` takes the caps from
    // the group's flow.
    for pix in ["yuv422p10le", "uyvy422", "yuv420p"] {
        let urn = format!("ff-to-gst-{series}-{pix}");
        let rx = gst_launch_via(
            "gst receiver",
            &format!("mcmsrc urn={urn} reliable=true ! checksumsink hash=md5"),
            &socket,
            true,
        );
        let frames_n = 30;
        let convert = format!("-an -frames:v {frames_n} -pix_fmt {pix} -c:v rawvideo");
        let mut tx_args = input(true);
        tx_args.extend(args(&format!("{convert} -f mcm -urn {urn} -reliable 1 -")));
        let mut reference = input(true);
        reference.extend(args(&format!("{convert} -f framemd5 -")));
        let want: Vec<String> = frames(&finish_ok(run(&bin, &proxy, "reference", &reference)))
            .into_iter()
            .map(|f| f.2)
            .collect();
        finish_ok(run(&bin, &proxy, "ffmpeg sender", &tx_args));
        let got = checksums_md5(&finish_ok(rx));
        assert_eq!(want.len(), frames_n);
        assert_eq!(
            got, want,
            "{series} {pix}: FFmpeg -> GStreamer frames differ"
        );
    }
}

/// `checksumsink hash=md5` lines: the md5 of each buffer.
fn checksums_md5(log: &[String]) -> Vec<String> {
    log.iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|h| h.len() == 32)
        .map(str::to_owned)
        .collect()
}

fn bad_options(series: &str) {
    let bin = ffmpeg(series);
    let long_urn = "u".repeat(300);
    let cases = [
        (
            "-f mcm -pixel_format nosuchformat -i -".to_string(),
            "nosuchformat",
        ),
        ("-f mcm -port -1 -i -".to_string(), "port"),
        ("-f mcm -video_size 0x0 -i -".to_string(), "video_size"),
        (
            format!("-f mcm -urn {long_urn} -i -"),
            "urn is 300 characters long",
        ),
        (
            "-f mcm -conn_type carrier-pigeon -i -".to_string(),
            "conn_type",
        ),
    ];
    for (line, needle) in cases {
        let out = Command::new(&bin)
            .args(["-hide_banner", "-nostdin"])
            .args(line.split_whitespace())
            .args(["-f", "null", "-"])
            .env("MCM_PROXY_SOCKET", "/nonexistent/mcm.sock")
            .output()
            .expect("ffmpeg");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some_and(|c| c != 0),
            "{line}: exit {:?}, {err}",
            out.status
        );
        assert!(err.contains(needle), "{line}: no clear message: {err}");
    }
}

macro_rules! series {
    ($m:ident, $s:literal) => {
        mod $m {
            #[test]
            fn clip_frames_arrive_exact_in_three_pixel_formats() {
                super::video_round_trip($s);
            }
            #[test]
            fn clip_audio_arrives_sample_exact_as_pcm24() {
                super::audio_round_trip($s);
            }
            #[test]
            fn gstreamer_to_ffmpeg_and_back() {
                super::gstreamer_both_ways($s);
            }
            #[test]
            fn bad_options_give_a_clear_error() {
                super::bad_options($s);
            }
        }
    };
}

series!(ffmpeg_7_1, "7.1");
series!(ffmpeg_5_1, "5.1");
