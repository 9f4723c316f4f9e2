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

impl v1::Outcome {
    /// The name stored in the inbox's `outcome` column and shown in answers and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Failed => "failed",
            Self::Unspecified => "unspecified",
        }
    }

    /// The outcome a stored [`v1::Outcome::label`] names; `Unspecified` for anything else.
    pub fn from_label(label: &str) -> Self {
        match label {
            "processed" => Self::Processed,
            "duplicate" => Self::Duplicate,
            "ignored" => Self::Ignored,
            "failed" => Self::Failed,
            _ => Self::Unspecified,
        }
    }
}

impl v1::Source {
    /// The name stored in the inbox's `source` column.
    pub fn label(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::TestEndpoint => "test_endpoint",
            Self::Backfill => "backfill",
            Self::Unspecified => "unspecified",
        }
    }
}

impl v1::ChangeKind {
    /// Every kind a change can have, in the order of its number.
    pub const ALL: [Self; 7] = [
        Self::Created,
        Self::DetailsUpdated,
        Self::Rescheduled,
        Self::Canceled,
        Self::NoShowMarked,
        Self::NoShowUnmarked,
        Self::LeadLinked,
    ];

    /// The name stored in the change feed's `kind` column and used in metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::DetailsUpdated => "details_updated",
            Self::Rescheduled => "rescheduled",
            Self::Canceled => "canceled",
            Self::NoShowMarked => "no_show_marked",
            Self::NoShowUnmarked => "no_show_unmarked",
            Self::LeadLinked => "lead_linked",
            Self::Unspecified => "unspecified",
        }
    }

    /// The kind a stored [`v1::ChangeKind::label`] names; `Unspecified` for anything else.
    pub fn from_label(label: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|kind| kind.label() == label)
            .unwrap_or(Self::Unspecified)
    }
}

impl v1::SubscriptionState {
    /// Every state a run can record.
    pub const ALL: [Self; 4] = [Self::Active, Self::Disabled, Self::Missing, Self::Unknown];

    /// The name stored in `sync_runs.subscription_state` and used as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Missing => "missing",
            Self::Unknown => "unknown",
            Self::Unspecified => "unspecified",
        }
    }

    pub fn from_label(label: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|state| state.label() == label)
            .unwrap_or(Self::Unspecified)
    }
}

#[cfg(test)]
mod tests {
    use super::v1::{ChangeKind, Outcome, SubscriptionState};

    #[test]
    fn every_subscription_state_label_reads_back_as_its_state() {
        for state in SubscriptionState::ALL {
            assert_eq!(SubscriptionState::from_label(state.label()), state);
        }
    }

    #[test]
    fn every_change_kind_label_reads_back_as_its_kind() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::from_label(kind.label()), kind);
        }
        assert_eq!(ChangeKind::from_label("unspecified"), ChangeKind::Unspecified);
    }

    #[test]
    fn every_outcome_label_reads_back_as_its_outcome() {
        for outcome in [
            Outcome::Processed,
            Outcome::Duplicate,
            Outcome::Ignored,
            Outcome::Failed,
            Outcome::Unspecified,
        ] {
            assert_eq!(Outcome::from_label(outcome.label()), outcome);
        }
    }
}
