//! `adapter`: the HTTP front door on its own, configured by the environment.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::binary::run_binary(adapter::run).await
}
