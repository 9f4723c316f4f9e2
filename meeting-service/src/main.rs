//! `meeting-service`: the gRPC meeting service on its own, configured by the environment.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::binary::run_binary(meeting_service::run).await
}
