//! The `duovarsity-load` command: see the library's documentation.

#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <duovarsity_load::Args as clap::Parser>::parse();
    duovarsity_load::run(args).await?;
    Ok(())
}
