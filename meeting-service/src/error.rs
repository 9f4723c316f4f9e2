//! The meeting service's errors and their gRPC status codes.

use sea_orm::DbErr;
use tonic::{Code, Status};

use crate::store::retry::is_transient;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with another record (e.g. a lead's e-mail taken by another lead).
    #[error("{0}")]
    AlreadyExists(String),
    /// The record is not in a state that allows this (e.g. completing a reminder not claimed).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The database is unreachable or kept failing transiently; nothing was stored.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl ServiceError {
    pub fn from_db(error: DbErr) -> Self {
        if is_transient(&error) {
            Self::Unavailable(error)
        } else {
            Self::Unexpected(anyhow::Error::new(error))
        }
    }

    /// The same failure for another caller of a batch that failed as a whole.
    pub fn shared(&self) -> Self {
        match self {
            Self::InvalidArgument(m) => Self::InvalidArgument(m.clone()),
            Self::NotFound(m) => Self::NotFound(m.clone()),
            Self::AlreadyExists(m) => Self::AlreadyExists(m.clone()),
            Self::FailedPrecondition(m) => Self::FailedPrecondition(m.clone()),
            Self::Unavailable(cause) => Self::Unavailable(DbErr::Custom(cause.to_string())),
            Self::Unexpected(cause) => Self::Unexpected(anyhow::anyhow!("{cause:#}")),
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Unexpected(_) => Code::Internal,
        }
    }
}

impl From<ServiceError> for Status {
    /// The caller gets a short message; the cause chain is logged here, with the request's span
    /// (and so its tracking id), never sent.
    fn from(error: ServiceError) -> Self {
        let code = error.code();
        let message = match &error {
            ServiceError::InvalidArgument(message)
            | ServiceError::NotFound(message)
            | ServiceError::AlreadyExists(message)
            | ServiceError::FailedPrecondition(message) => message.clone(),
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
