//! The wire contract between the adapter, the meeting service and internal callers:
//! package `calendly.meetings.v1`, generated from `proto/calendly/meetings/v1/meetings.proto`.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("calendly.meetings.v1");
}

/// Encoded `FileDescriptorSet` of the API, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/meetings_descriptor.bin"));

/// gRPC metadata key that carries a delivery's tracking id from the adapter to the meeting service.
pub const TRACKING_ID_METADATA_KEY: &str = "x-tracking-id";

/// Fully qualified service name, as registered with the health service.
pub const MEETING_SERVICE_NAME: &str = "calendly.meetings.v1.MeetingService";

impl v1::EventKind {
    /// The kind's Calendly event name, for logs and bounded metric labels (never the name as
    /// received, which a client controls).
    pub fn canonical_name(self) -> &'static str {
        match self {
            Self::InviteeCreated => "invitee.created",
            Self::InviteeCanceled => "invitee.canceled",
            Self::InviteeNoShowCreated => "invitee_no_show.created",
            Self::InviteeNoShowDeleted => "invitee_no_show.deleted",
            Self::InviteeRescheduled => "invitee.rescheduled",
            Self::RoutingFormSubmissionCreated => "routing_form_submission.created",
            Self::Other | Self::Unspecified => "other",
        }
    }
}

impl v1::CalendlyEvent {
    /// [`v1::EventKind::canonical_name`] of this event's kind.
    pub fn kind_name(&self) -> &'static str {
        v1::EventKind::try_from(self.kind)
            .unwrap_or_default()
            .canonical_name()
    }
}
