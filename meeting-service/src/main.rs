//! `meeting-service`: the gRPC meeting service on its own, configured by the environment.

fn main() -> anyhow::Result<()> {
    service_kit::allocator::limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(service_kit::binary::run_binary(meeting_service::run))
}
