//! `meeting-service`: the gRPC meeting service on its own, configured by the environment.

fn main() -> anyhow::Result<()> {
    service_kit::binary::start(|| service_kit::binary::run_binary(meeting_service::run))
}
