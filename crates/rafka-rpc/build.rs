//! Compiles `proto/rafka.proto` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = proto_dir.join("rafka.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&proto_dir])?;
    tonic_prost_build::configure()
        .bytes(".rafka.v1.PartitionData.records")
        .compile_fds(descriptors)?;
    Ok(())
}
