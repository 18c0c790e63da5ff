//! Compiles every `.proto` under `proto/` with protox (pure Rust, no `protoc`), generates the
//! tonic and prost code, and writes the encoded descriptor set that reflection and the
//! gateway's transcoder read at run time.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let root = root.canonicalize()?;
    println!("cargo:rerun-if-changed={}", root.display());

    let mut files = Vec::new();
    collect_protos(&root, &root, &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;
    // Encoded by protox itself: prost_types drops the custom options (google.api.http,
    // duovarsity.options.v1.access) that the gateway and the auth layer read.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("duovarsity_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let descriptors = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        // Small first buffers: idle live streams would otherwise hold 16 KiB each.
        .codec_path("crate::codec::LeanCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

/// Every `.proto` below `dir`, as a path relative to `root` (the include directory).
fn collect_protos(
    root: &Path,
    dir: &Path,
    files: &mut Vec<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            // New files in a folder must trigger a rebuild too.
            println!("cargo:rerun-if-changed={}", path.display());
            collect_protos(root, &path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            let relative = path
                .strip_prefix(root)?
                .to_string_lossy()
                .replace('\\', "/");
            files.push(relative);
        }
    }
    Ok(())
}
