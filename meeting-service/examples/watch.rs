//! A change-feed consumer: prints each meeting change as it commits and, when its stream ends,
//! resumes from the last cursor it received, so it sees every change at least once and drops
//! repeats by `change_id`.
//!
//! ```text
//! cargo run -p meeting-service --example watch -- [--cursor C] [--lead-id N] [--kind canceled ...]
//! ```
//!
//! `MEETING_SERVICE_URL` (default `http://127.0.0.1:50051`) and `INTERNAL_API_TOKEN` (when the
//! service has one) say where and how to connect. A cursor past the feed's retention is answered
//! `OUT_OF_RANGE`: the consumer then resyncs with `ListMeetings` and resumes from its cursor.

use std::time::Duration;

use proto::v1::{
    ChangeKind, ListMeetingsRequest, WatchMeetingChangesRequest,
    meeting_service_client::MeetingServiceClient, watch_meeting_changes_response::Item,
};
use tonic::{
    Code, Request,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

struct Options {
    cursor: String,
    lead_id: Option<i64>,
    kinds: Vec<i32>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        cursor: String::new(),
        lead_id: None,
        kinds: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--cursor" => options.cursor = value,
            "--lead-id" => {
                options.lead_id = Some(value.parse().map_err(|_| "--lead-id takes a number")?);
            }
            "--kind" => {
                let kind = ChangeKind::ALL
                    .into_iter()
                    .find(|kind| kind.label() == value)
                    .ok_or_else(|| {
                        format!(
                            "--kind: one of {}",
                            ChangeKind::ALL.map(ChangeKind::label).join(", ")
                        )
                    })?;
                options.kinds.push(kind as i32);
            }
            _ => {
                return Err(format!(
                    "unknown option {flag}; options: --cursor, --lead-id, --kind"
                ));
            }
        }
    }
    Ok(options)
}

fn authorized<T>(message: T, token: Option<&MetadataValue<Ascii>>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", token.clone());
    }
    request
}

/// The change cursor of a full listing, read with its first page: resuming from it after
/// reading every page misses nothing. (A real consumer would store the meetings it lists.)
async fn resync(
    client: &mut MeetingServiceClient<Channel>,
    token: Option<&MetadataValue<Ascii>>,
) -> Result<String, tonic::Status> {
    let mut page_token = String::new();
    let mut meetings = 0;
    loop {
        let request = ListMeetingsRequest {
            page_size: 500,
            page_token,
            ..Default::default()
        };
        let page = client
            .list_meetings(authorized(request, token))
            .await?
            .into_inner();
        meetings += page.meetings.len();
        if page.next_page_token.is_empty() {
            println!(
                "resynced: {meetings} meetings listed; resuming from {}",
                page.change_cursor
            );
            return Ok(page.change_cursor);
        }
        page_token = page.next_page_token;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    let url = std::env::var("MEETING_SERVICE_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token: Option<MetadataValue<Ascii>> = match std::env::var("INTERNAL_API_TOKEN") {
        Ok(token) if !token.is_empty() => Some(format!("Bearer {token}").parse()?),
        _ => None,
    };
    let mut client = MeetingServiceClient::new(Channel::from_shared(url)?.connect_lazy());
    let mut cursor = options.cursor.clone();
    let mut last_seen = 0;
    loop {
        let request = WatchMeetingChangesRequest {
            cursor: cursor.clone(),
            kinds: options.kinds.clone(),
            lead_id: options.lead_id,
        };
        let ended = match client
            .watch_meeting_changes(authorized(request, token.as_ref()))
            .await
        {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            if let Some(Item::Change(change)) = &message.item
                                && change.change_id > last_seen
                            {
                                last_seen = change.change_id;
                                let meeting = change.meeting.clone().unwrap_or_default();
                                println!(
                                    "{} {} meeting {} {} {} ({})",
                                    change.change_id,
                                    change.kind().label(),
                                    meeting.id,
                                    meeting.status,
                                    meeting.invitee_email,
                                    change.cause
                                );
                            }
                            cursor = message.cursor;
                        }
                        Ok(None) => break tonic::Status::unavailable("the stream ended"),
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        match ended.code() {
            Code::OutOfRange => {
                eprintln!("{}", ended.message());
                cursor = resync(&mut client, token.as_ref()).await?;
            }
            Code::Unavailable | Code::ResourceExhausted | Code::Cancelled | Code::DeadlineExceeded => {
                eprintln!("stream ended ({}); resuming from {cursor:?}", ended.message());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => return Err(format!("{:?}: {}", ended.code(), ended.message()).into()),
        }
    }
}
