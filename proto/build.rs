fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &["proto/mcm/v1/sdk.proto", "proto/mcm/v1/control.proto"],
        &["proto"],
    )?;
    Ok(())
}
