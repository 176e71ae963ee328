//! `mcm bridges` and `mcm sdp`: a proxy's ST 2110 bridges and the SDP of the streams it
//! sends, read over its control API (port 8001).

use std::path::PathBuf;

use anyhow::Context;
use mcm_proto::v1::control_client::ControlClient;
use mcm_proto::v1::{BridgeInfo, ListRequest};

#[derive(clap::Args)]
pub struct ControlArgs {
    /// The proxy's control API.
    #[arg(long, env = "MCM_CONTROL", default_value = "http://127.0.0.1:8001")]
    control: String,
    /// File holding the proxy's auth token (the proxy writes one beside its unix socket).
    #[arg(long, env = "MCM_AUTH_TOKEN_FILE", default_value_os_t = mcm_core::sdk::token_path(std::path::Path::new(mcm_core::sdk::DEFAULT_UNIX_SOCKET)))]
    token_file: PathBuf,
}

#[derive(clap::Args)]
pub struct SdpArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// The stream, `ip:port` as in the bridge's connection; the only transmitted one when
    /// absent.
    stream: Option<String>,
}

fn list(args: &ControlArgs) -> anyhow::Result<Vec<BridgeInfo>> {
    let token = std::env::var("MCM_AUTH_TOKEN")
        .ok()
        .or_else(|| std::fs::read_to_string(&args.token_file).ok())
        .map(|t| t.trim().to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(args.control.clone())
            .with_context(|| format!("control API address {}", args.control))?
            .connect()
            .await
            .with_context(|| {
                format!("connecting to the proxy's control API at {}", args.control)
            })?;
        let mut client =
            ControlClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                if let Some(t) = &token {
                    let value = format!("Bearer {t}")
                        .parse()
                        .map_err(|_| tonic::Status::invalid_argument("token is not ASCII"))?;
                    req.metadata_mut().insert("authorization", value);
                }
                Ok(req)
            });
        let reply = client
            .list_bridges(ListRequest {
                api_version: mcm_proto::API_VERSION,
            })
            .await
            .map_err(|s| anyhow::anyhow!("ListBridges: {}", s.message()))?;
        Ok(reply.into_inner().bridges)
    })
}

/// Prints one line per bridge: key, transport, counters, timing verdict, users.
pub fn run(args: ControlArgs) -> anyhow::Result<()> {
    let bridges = list(&args)?;
    if bridges.is_empty() {
        println!("no bridges");
    }
    for b in bridges {
        println!(
            "{} {} flow {} {}: {} packets, {} grains, {} incomplete, {} lost, {} dropped, timing {}, users {}",
            b.key,
            b.transport,
            b.flow_id,
            b.state,
            b.packets,
            b.grains,
            b.incomplete,
            b.lost,
            b.dropped,
            if b.timing.is_empty() { "-" } else { &b.timing },
            b.users.join(",")
        );
    }
    Ok(())
}

/// Prints the SDP of a transmitted stream.
pub fn sdp(args: SdpArgs) -> anyhow::Result<()> {
    let bridges = list(&args.control)?;
    let senders: Vec<&BridgeInfo> = bridges
        .iter()
        .filter(|b| b.key.starts_with("tx/"))
        .filter(|b| args.stream.as_ref().is_none_or(|s| b.key[3..] == **s))
        .collect();
    let bridge = match senders.as_slice() {
        [one] => one,
        [] => anyhow::bail!(
            "no transmitted stream{} on this proxy",
            args.stream
                .as_ref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default()
        ),
        many => anyhow::bail!(
            "{} streams are transmitted; name one: {}",
            many.len(),
            many.iter()
                .map(|b| &b.key[3..])
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if bridge.sdp.is_empty() {
        anyhow::bail!(
            "{} has not sent a grain yet: its format is not known",
            bridge.key
        );
    }
    print!("{}", bridge.sdp);
    Ok(())
}
