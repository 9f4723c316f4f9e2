//! Stalled change-feed consumers: `WatchMeetingChanges` streams that are opened and never read,
//! each on its own connection with a small HTTP/2 window, held while a load runs beside them.
//! Afterwards each is read to its end, to see how it ended (the service should have cut it off
//! with RESOURCE_EXHAUSTED once it stalled).

use std::time::Duration;

use proto::v1::{WatchMeetingChangesRequest, meeting_service_client::MeetingServiceClient};
use serde::Serialize;
use tonic::{Request, transport::Channel};

#[derive(Debug, Serialize)]
pub struct StalledReport {
    pub streams: usize,
    /// How each stream ended once read: a gRPC code name, or "open" when it had not ended.
    pub endings: Vec<String>,
    /// Messages each stream had received before its end.
    pub messages: Vec<usize>,
}

/// Opens `streams` stalled streams on `addr`, waits until `release` resolves, then reads each
/// (for at most `drain` each) and reports how it ended.
pub async fn run(
    addr: &str,
    token: Option<&str>,
    streams: usize,
    release: impl Future<Output = ()>,
    drain: Duration,
) -> anyhow::Result<StalledReport> {
    let mut opened = Vec::with_capacity(streams);
    for _ in 0..streams {
        let channel = Channel::from_shared(addr.to_owned())?
            .initial_stream_window_size(16 * 1024)
            .initial_connection_window_size(64 * 1024)
            .connect()
            .await?;
        let mut request = Request::new(WatchMeetingChangesRequest::default());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
        }
        let stream = MeetingServiceClient::new(channel)
            .watch_meeting_changes(request)
            .await?
            .into_inner();
        opened.push(stream);
    }
    release.await;
    let mut endings = Vec::with_capacity(streams);
    let mut messages = Vec::with_capacity(streams);
    for mut stream in opened {
        let mut received = 0;
        let ending = loop {
            match tokio::time::timeout(drain, stream.message()).await {
                Err(_) => break "open".to_owned(),
                Ok(Ok(Some(_))) => received += 1,
                Ok(Ok(None)) => break "OK".to_owned(),
                Ok(Err(status)) => break format!("{:?}", status.code()),
            }
        };
        endings.push(ending);
        messages.push(received);
    }
    Ok(StalledReport {
        streams,
        endings,
        messages,
    })
}
