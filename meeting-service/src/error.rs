//! The meeting service's errors and their gRPC status codes, mapped in one place.
//!
//! Each variant says what went wrong with the data its message needs; the mapping to a status code
//! is exhaustive, so a new variant forces a decision. Database errors become `Unavailable` or
//! `Unexpected` by their cause (`store::retry` classifies them).

use std::fmt;

use sea_orm::DbErr;
use tonic::{Code, Status};

/// The kind of record a key did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Meeting,
    Lead,
    Reminder,
    WebhookEvent,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Meeting => "meeting",
            Self::Lead => "lead",
            Self::Reminder => "reminder",
            Self::WebhookEvent => "webhook event",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A request field is missing, malformed or out of range; the message starts with its name.
    #[error("{field}: {problem}")]
    InvalidArgument { field: &'static str, problem: String },
    #[error("no {record} with {key}")]
    NotFound { record: Record, key: String },
    /// The request conflicts with another record (e.g. a lead's e-mail taken by another lead).
    #[error("{field}: {problem}")]
    AlreadyExists {
        field: &'static str,
        problem: &'static str,
    },
    /// Completing or releasing a reminder needs the claim that currently holds it.
    #[error("reminder {id} is {state} and not held by this claim token")]
    ClaimNotHeld { id: i64, state: String },
    /// A change-feed cursor the feed cannot resume from without a gap.
    #[error("cursor: {problem}; resync with ListMeetings and resume from the change_cursor it returns")]
    CursorOutOfRange { problem: &'static str },
    /// A change stream cannot be opened or kept: too many are open, or its consumer stalled.
    #[error("{0}")]
    StreamRefused(StreamRefusal),
    /// The service is stopping; long calls (change streams) are ended.
    #[error("the meeting service is stopping; retry (a change stream resumes from its last cursor)")]
    Stopping,
    /// The database is unreachable or kept failing transiently; nothing was stored.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

/// Why a change stream was refused or ended, with the limit that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefusal {
    TooManyStreams { limit: usize },
    ConsumerStalled { seconds: u64 },
}

impl fmt::Display for StreamRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyStreams { limit } => {
                write!(
                    f,
                    "{limit} change streams are open, the most this replica serves; retry later"
                )
            }
            Self::ConsumerStalled { seconds } => write!(
                f,
                "this stream's consumer took no change for {seconds} s; resume from the last cursor received"
            ),
        }
    }
}

impl ServiceError {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            problem: problem.into(),
        }
    }

    pub fn not_found(record: Record, key: impl fmt::Display) -> Self {
        Self::NotFound {
            record,
            key: key.to_string(),
        }
    }

    /// The same failure for another caller of a batch that failed as a whole.
    pub fn shared(&self) -> Self {
        match self {
            Self::InvalidArgument { field, problem } => Self::invalid(field, problem.clone()),
            Self::NotFound { record, key } => Self::not_found(*record, key),
            Self::AlreadyExists { field, problem } => Self::AlreadyExists { field, problem },
            Self::ClaimNotHeld { id, state } => Self::ClaimNotHeld {
                id: *id,
                state: state.clone(),
            },
            Self::CursorOutOfRange { problem } => Self::CursorOutOfRange { problem },
            Self::StreamRefused(refusal) => Self::StreamRefused(*refusal),
            Self::Stopping => Self::Stopping,
            Self::Unavailable(cause) => Self::Unavailable(DbErr::Custom(cause.to_string())),
            Self::Unexpected(cause) => Self::Unexpected(anyhow::anyhow!("{cause:#}")),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::ClaimNotHeld { .. } => Code::FailedPrecondition,
            Self::CursorOutOfRange { .. } => Code::OutOfRange,
            Self::StreamRefused(_) => Code::ResourceExhausted,
            Self::Stopping | Self::Unavailable(_) => Code::Unavailable,
            Self::Unexpected(_) => Code::Internal,
        }
    }

    /// The result label of the call's metrics: its code, in few values.
    pub fn label(&self) -> &'static str {
        match self.code() {
            Code::InvalidArgument => "invalid_argument",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::FailedPrecondition => "failed_precondition",
            Code::OutOfRange => "out_of_range",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Unavailable => "unavailable",
            _ => "internal",
        }
    }
}

impl From<ServiceError> for Status {
    /// The caller gets a short message; the cause chain is logged here, with the request's span
    /// (and so its tracking id), never sent.
    fn from(error: ServiceError) -> Self {
        let code = error.code();
        let message = match &error {
            ServiceError::InvalidArgument { .. }
            | ServiceError::NotFound { .. }
            | ServiceError::AlreadyExists { .. }
            | ServiceError::ClaimNotHeld { .. }
            | ServiceError::CursorOutOfRange { .. }
            | ServiceError::StreamRefused(_)
            | ServiceError::Stopping => error.to_string(),
            ServiceError::Unavailable(cause) => {
                tracing::error!(error = %cause, "database unavailable");
                "the meeting database is unavailable; retry later".to_owned()
            }
            ServiceError::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "unexpected error");
                "internal error".to_owned()
            }
        };
        Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_what_and_an_internal_failure_says_nothing() {
        let status = Status::from(ServiceError::invalid("page_size", "at most 500"));
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, "page_size: at most 500")
        );
        let status = Status::from(ServiceError::not_found(Record::WebhookEvent, "id 7"));
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "no webhook event with id 7")
        );
        let status = Status::from(ServiceError::Unexpected(anyhow::anyhow!("secret detail")));
        assert_eq!(
            (status.code(), status.message()),
            (Code::Internal, "internal error")
        );
    }
}
