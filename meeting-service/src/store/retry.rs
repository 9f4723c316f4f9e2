//! Which database errors are worth retrying, and how long to wait between tries.
//!
//! Transient: the connection or pool failed, PostgreSQL aborted the transaction for a
//! serialization failure or deadlock, SQLite was busy or locked, or a concurrent transaction
//! inserted the same meeting or lead first (a retry then finds it). Everything else is final.

use std::time::Duration;

use rand::Rng;
use sea_orm::{DbErr, RuntimeErr, SqlErr, sqlx};
use tracing::Instrument;

use super::Store;
use crate::error::ServiceError;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(1_000),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter exponential backoff before try `attempt + 1` (`attempt` starts at 1).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exponential = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let millis = u64::try_from(exponential.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

impl Store {
    /// Runs `attempt` (one whole transaction) until it succeeds, retrying transient failures with
    /// backoff up to the policy's number of tries.
    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        operation: &'static str,
        mut attempt: F,
    ) -> Result<T, ServiceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        let policy = self.settings.retry;
        let mut tries = 1;
        loop {
            match attempt().instrument(tracing::Span::current()).await {
                Ok(value) => return Ok(value),
                Err(error) if is_transient(&error) && tries < policy.max_attempts => {
                    let delay = policy.delay_after(tries);
                    tracing::warn!(operation, attempt = tries, ?delay, error = %error, "transient database error; retrying");
                    metrics::counter!("calendly_db_retries_total", "operation" => operation).increment(1);
                    tokio::time::sleep(delay).await;
                    tries += 1;
                }
                Err(error) => {
                    tracing::error!(operation, attempts = tries, error = %error, "database transaction failed; rolled back");
                    return Err(ServiceError::from_db(error));
                }
            }
        }
    }
}

/// Whether trying the same transaction again may succeed.
pub fn is_transient(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(runtime) | DbErr::Query(runtime) => match runtime {
            RuntimeErr::SqlxError(sqlx_error) => is_transient_sqlx(sqlx_error),
            RuntimeErr::Internal(_) => false,
        },
        _ => matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))),
    }
}

fn is_transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: serialization failure, deadlock, admin shutdown, connection exceptions.
            // SQLite: BUSY (5) and its extended codes, LOCKED (6) and its extended codes.
            matches!(code.as_ref(), "40001" | "40P01" | "57P01" | "57P02" | "57P03")
                || code.starts_with("08")
                || matches!(code.parse::<u32>().map(|c| c & 0xff), Ok(5 | 6))
                || db.is_unique_violation()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_but_stays_bounded() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        };
        for attempt in 1..20 {
            assert!(policy.delay_after(attempt) <= Duration::from_millis(100));
        }
    }

    #[test]
    fn lost_connections_are_transient_and_bad_sql_is_not() {
        assert!(is_transient(&DbErr::Conn(RuntimeErr::Internal("gone".into()))));
        assert!(!is_transient(&DbErr::Custom("bad".into())));
        assert!(!is_transient(&DbErr::Exec(RuntimeErr::Internal("syntax".into()))));
    }
}
