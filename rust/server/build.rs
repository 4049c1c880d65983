//! Generate the gRPC code: toolgate.v1's messages and `Decider` service, and agentgateway's
//! ExtMCP messages and `ExtMcp` service, from their schemas in proto/ (protox: no protoc
//! needed), keeping their descriptors for server reflection; and servers for Envoy's
//! `Authorization`, `ExternalProcessor` and `RateLimitService` over envoy-types' messages.
//! Every service decodes requests with `crate::codec::ProstCodec` (ext_proc's streams with its
//! `StreamCodec`).

use prost::Message;
use tonic_build::manual::{Method, Service};

const CODEC: &str = "crate::codec::ProstCodec";
/// For ext_proc's streams, which stay open (a `GET` stream for as long as its session).
const STREAM_CODEC: &str = "crate::codec::StreamCodec";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not compiled in: one kept target directory serves every
    // checkout (scripts/build-cache.sh), and with it this script's binary.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for (schema, bin) in [
        ("toolgate/v1/decider.proto", "toolgate.v1.bin"),
        ("agentgateway/ext_mcp.proto", "ext_mcp.bin"),
    ] {
        let file = root.join(schema);
        println!("cargo:rerun-if-changed={}", file.display());
        let descriptors = protox::compile([&file], [&root])?;
        std::fs::write(out.join(bin), descriptors.encode_to_vec())?;
        tonic_prost_build::configure()
            .build_client(false)
            .codec_path(CODEC)
            // The Struct of envoy-types, which the credential readers take.
            .extern_path(
                ".google.protobuf.Struct",
                "::envoy_types::pb::google::protobuf::Struct",
            )
            .compile_fds(descriptors)?;
    }

    let envoy = "::envoy_types::pb::envoy::service";
    let unary = |name: &str, route: &str, input: String, output: String| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path(CODEC)
            .build()
    };
    let services = [
        Service::builder()
            .name("Authorization")
            .package("envoy.service.auth.v3")
            .method(unary(
                "check",
                "Check",
                format!("{envoy}::auth::v3::CheckRequest"),
                format!("{envoy}::auth::v3::CheckResponse"),
            ))
            .build(),
        Service::builder()
            .name("ExternalProcessor")
            .package("envoy.service.ext_proc.v3")
            .method(
                Method::builder()
                    .name("process")
                    .route_name("Process")
                    .input_type(format!("{envoy}::ext_proc::v3::ProcessingRequest"))
                    .output_type(format!("{envoy}::ext_proc::v3::ProcessingResponse"))
                    .codec_path(STREAM_CODEC)
                    .client_streaming()
                    .server_streaming()
                    .build(),
            )
            .build(),
        Service::builder()
            .name("RateLimitService")
            .package("envoy.service.ratelimit.v3")
            .method(unary(
                "should_rate_limit",
                "ShouldRateLimit",
                format!("{envoy}::ratelimit::v3::RateLimitRequest"),
                format!("{envoy}::ratelimit::v3::RateLimitResponse"),
            ))
            .build(),
    ];
    tonic_build::manual::Builder::new()
        .build_client(false)
        .compile(&services);
    Ok(())
}
