//! `mcm`: inspect and clean a flow domain, run the flow demo, bridge flows to ST 2110.

mod bridges;
mod demo;
mod info;
mod st2110;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mcm",
    version,
    about = "Media Communications Mesh command-line tool"
)]
struct Cli {
    /// Flow domain directory (normally on tmpfs).
    #[arg(long, global = true, env = "MCM_DOMAIN", default_value = mcm_core::Domain::DEFAULT_PATH)]
    domain: PathBuf,
    /// Log filter (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "MCM_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the flows of the domain, or show one flow's header, head, latency and readers.
    Info {
        /// Flow id; all flows when absent.
        flow: Option<uuid::Uuid>,
    },
    /// Remove flows whose writer died, and stale `.mxl-tmp-*` directories.
    Gc,
    /// Write a moving v210 test pattern to a flow and read it back in a second process,
    /// verifying every grain and printing grains per second.
    Demo(demo::DemoArgs),
    /// The reading side of `mcm demo` (started by it).
    #[command(hide = true)]
    DemoRead(demo::ReadArgs),
    /// Send a flow as an ST 2110 stream over UDP: video as -20 (RFC 4175), PCM as -30,
    /// ancillary data as -40 (RFC 8331).
    #[command(name = "st2110-send")]
    St2110Send(st2110::SendArgs),
    /// Receive an ST 2110-20, -30 or -40 stream over UDP into a flow.
    #[command(name = "st2110-recv")]
    St2110Recv(st2110::RecvArgs),
    /// List a proxy's ST 2110 bridges with their counters and timing verdicts.
    Bridges(bridges::ControlArgs),
    /// Print the SDP of a stream a proxy transmits.
    Sdp(bridges::SdpArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Info { flow } => info::run(&cli.domain, flow),
        Command::Gc => info::gc(&cli.domain),
        Command::Demo(args) => demo::run(&cli.domain, args),
        Command::DemoRead(args) => demo::read(&cli.domain, args),
        Command::St2110Send(args) => st2110::send(&cli.domain, args),
        Command::St2110Recv(args) => st2110::recv(&cli.domain, args),
        Command::Bridges(args) => bridges::run(args),
        Command::Sdp(args) => bridges::sdp(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
