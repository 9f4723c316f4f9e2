//! A real meeting service for a test: `meeting_service::run` on 127.0.0.1, port 0, against a
//! fresh SQLite file, with the internal token; and what the tests read back from it.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use adapter::meeting_client::MeetingClient;
use proto::v1::{
    GetMeetingRequest, Meeting, get_meeting_request::Key, meeting_service_client::MeetingServiceClient,
};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use service_kit::settings::map_lookup;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

pub const INTERNAL_TOKEN: &str = "test-internal-token";

pub struct MeetingService {
    pub url: String,
    pub client: MeetingClient,
    db: DatabaseConnection,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl MeetingService {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("meetings.db").display());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
        let addr: SocketAddr = listener.local_addr().expect("gRPC address");
        let settings: HashMap<String, String> = [
            ("DATABASE_URL", database_url.as_str()),
            ("LOG_DIR", "off"),
            ("INTERNAL_API_TOKEN", INTERNAL_TOKEN),
            ("HEALTH_CHECK_INTERVAL_SECS", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config =
            meeting_service::Config::from_lookup(&map_lookup(settings)).expect("meeting service settings");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(meeting_service::run(config, listener, async {
            stopped.await.ok();
        }));
        let url = format!("http://{addr}");
        let client =
            MeetingClient::new(&url, Some(INTERNAL_TOKEN), Duration::from_secs(10)).expect("meeting client");
        let mut serving = false;
        for _ in 0..1_200 {
            if client.health("test").await == Ok(ServingStatus::Serving) {
                serving = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            serving,
            "the meeting service did not start serving within a minute"
        );
        Self {
            url,
            client,
            db: Database::connect(&database_url).await.expect("test connection"),
            stop: Some(stop),
            _dir: dir,
        }
    }

    async fn grpc(
        &self,
    ) -> MeetingServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>> {
        let channel = Channel::from_shared(self.url.clone())
            .expect("gRPC URL")
            .connect()
            .await
            .expect("gRPC connect");
        MeetingServiceClient::with_interceptor(channel, Bearer)
    }

    /// The reconcile record, as `GetSyncStatus` answers it.
    pub async fn sync_status(&self) -> proto::v1::SyncStatus {
        self.grpc()
            .await
            .get_sync_status(proto::v1::GetSyncStatusRequest {})
            .await
            .expect("GetSyncStatus")
            .into_inner()
    }

    /// The whole meeting record of each invitee, in the order given.
    pub async fn meetings(&self, invitee_uris: &[String]) -> Vec<Meeting> {
        let mut grpc = self.grpc().await;
        let mut meetings = Vec::new();
        for uri in invitee_uris {
            let meeting = grpc
                .get_meeting(GetMeetingRequest {
                    key: Some(Key::CalendlyInviteeUri(uri.clone())),
                })
                .await
                .unwrap_or_else(|status| panic!("meeting {uri}: {status}"))
                .into_inner();
            meetings.push(meeting);
        }
        meetings
    }

    pub async fn count(&self, table: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                format!("SELECT COUNT(*) FROM {table}"),
            ))
            .await
            .expect("query")
            .expect("one row");
        row.try_get_by_index::<i64>(0).expect("a count")
    }
}

impl Drop for MeetingService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

#[derive(Clone)]
pub struct Bearer;

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {INTERNAL_TOKEN}").parse().expect("ASCII token");
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// What a meeting looks like to its users: the fields webhooks and back-fill must agree on, and
/// the reminders still to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingView {
    pub invitee: String,
    pub scheduled_event: String,
    pub status: String,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub name: Option<String>,
    pub email: String,
    pub cancel_reason: Option<String>,
    pub canceled_by: Option<String>,
    pub canceler_type: Option<String>,
    pub rescheduled_from: Option<String>,
    pub rescheduled_to: Option<String>,
    pub no_show: bool,
    pub live_reminders: Vec<(String, i64)>,
}

impl From<&Meeting> for MeetingView {
    fn from(m: &Meeting) -> Self {
        let mut live_reminders: Vec<(String, i64)> = m
            .reminders
            .iter()
            .filter(|r| r.state == "pending" || r.state == "claimed")
            .map(|r| {
                (
                    r.reminder_type.clone(),
                    r.scheduled_time.as_ref().map_or(0, |t| t.seconds),
                )
            })
            .collect();
        live_reminders.sort();
        Self {
            invitee: m.calendly_invitee_uri.clone(),
            scheduled_event: m.calendly_event_uri.clone(),
            status: m.status.clone(),
            start: m.start_time.as_ref().map(|t| t.seconds),
            end: m.end_time.as_ref().map(|t| t.seconds),
            name: m.meeting_name.clone(),
            email: m.invitee_email.clone(),
            cancel_reason: m.cancel_reason.clone(),
            canceled_by: m.canceled_by.clone(),
            canceler_type: m.canceler_type.clone(),
            rescheduled_from: m.rescheduled_from_invitee_uri.clone(),
            rescheduled_to: m.rescheduled_to_invitee_uri.clone(),
            no_show: m.no_show,
            live_reminders,
        }
    }
}
