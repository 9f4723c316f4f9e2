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
    /// The longest wait before try `attempt + 1` (`attempt` starts at 1): `base_delay` doubled
    /// for each earlier retry, capped at `max_delay`, and never zero.
    pub fn delay_bound(&self, attempt: u32) -> Duration {
        let exponential = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        exponential.max(Duration::from_millis(1))
    }

    /// Full-jitter exponential backoff before try `attempt + 1`: uniform in
    /// `[0, delay_bound(attempt)]`, whole milliseconds.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.jittered_delay(attempt, &mut rand::rng())
    }

    fn jittered_delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let millis = u64::try_from(self.delay_bound(attempt).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=millis))
    }
}

impl ServiceError {
    /// A database error as the caller sees it: `Unavailable` when trying again may succeed.
    pub fn from_db(error: DbErr) -> Self {
        if is_transient(&error) {
            Self::Unavailable(error)
        } else {
            Self::Unexpected(anyhow::Error::new(error))
        }
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
            if !self.database.is_up() {
                // Known down: answer now rather than wait for the pool; the caller retries later.
                metrics::counter!("calendly_db_fast_failures_total", "operation" => operation).increment(1);
                return Err(ServiceError::Unavailable(DbErr::Custom(
                    "the database is unreachable (health probe)".into(),
                )));
            }
            match attempt().instrument(tracing::Span::current()).await {
                Ok(value) => return Ok(value),
                Err(error) if is_transient(&error) && tries < policy.max_attempts => {
                    if is_connection_lost(&error) {
                        // The probe checks now; should the database be down, the next try fails
                        // fast instead of waiting on the pool again.
                        self.database.suspect();
                    }
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

/// Whether the error says the database itself cannot be reached (rather than that this one
/// transaction lost a race): the connection or the pool failed, or the server is shutting down.
pub fn is_connection_lost(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(sqlx_error)) | DbErr::Query(RuntimeErr::SqlxError(sqlx_error)) => {
            is_connection_lost_sqlx(sqlx_error)
        }
        _ => false,
    }
}

/// Whether trying the same transaction again may succeed.
pub fn is_transient(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(runtime) | DbErr::Query(runtime) => match runtime {
            RuntimeErr::SqlxError(sqlx_error) => {
                is_connection_lost_sqlx(sqlx_error) || lost_a_race(sqlx_error)
            }
            RuntimeErr::Internal(_) => false,
        },
        _ => matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))),
    }
}

fn is_connection_lost_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // PostgreSQL: connection exceptions (class 08) and the server shutting down.
            let code = db.code().unwrap_or_default();
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

/// The transaction met another one: trying again after it has finished may succeed.
fn lost_a_race(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    let code = db.code().unwrap_or_default();
    // PostgreSQL: serialization failure, deadlock. SQLite: BUSY (5) and LOCKED (6), with their
    // extended codes. Both: a unique key another transaction has just taken.
    matches!(code.as_ref(), "40001" | "40P01")
        || matches!(code.parse::<u32>().map(|c| c & 0xff), Ok(5 | 6))
        || db.is_unique_violation()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_five_tries_from_20_ms_up_to_one_second() {
        // docs/events.md, "Exactly once": "exponential backoff and jitter, up to 5 tries".
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_attempts, 5);
        assert_eq!(policy.base_delay, Duration::from_millis(20));
        assert_eq!(policy.max_delay, Duration::from_millis(1_000));
    }

    #[test]
    fn backoff_doubles_from_the_base_delay_until_the_cap() {
        let bounds: Vec<u128> = (1..=10)
            .map(|attempt| RetryPolicy::default().delay_bound(attempt).as_millis())
            .collect();
        assert_eq!(bounds, [20, 40, 80, 160, 320, 640, 1_000, 1_000, 1_000, 1_000]);
        // The retries the default policy actually makes: four waits between five tries.
        let policy = RetryPolicy::default();
        let waits: Vec<u128> = (1..policy.max_attempts)
            .map(|attempt| policy.delay_bound(attempt).as_millis())
            .collect();
        assert_eq!(waits, [20, 40, 80, 160]);
        // Far past the cap the shift saturates instead of overflowing.
        assert_eq!(policy.delay_bound(u32::MAX), Duration::from_millis(1_000));
    }

    #[test]
    fn jitter_stays_within_zero_and_the_bound_and_reaches_both_ends() {
        use rand::SeedableRng;
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(8),
        };
        // A seeded generator keeps this deterministic.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..=6 {
            let bound = policy.delay_bound(attempt);
            let delays: Vec<Duration> = (0..2_000)
                .map(|_| policy.jittered_delay(attempt, &mut rng))
                .collect();
            assert!(
                delays.iter().all(|d| *d <= bound),
                "attempt {attempt}: over {bound:?}"
            );
            assert!(delays.contains(&Duration::ZERO), "attempt {attempt}: never 0");
            assert!(delays.contains(&bound), "attempt {attempt}: never {bound:?}");
        }
        assert!(
            (0..100).all(|_| policy.delay_after(3) <= policy.delay_bound(3)),
            "the thread-local generator obeys the same bound"
        );
    }

    #[tokio::test]
    async fn a_transient_error_is_tried_five_times_in_all_and_a_final_one_once() {
        use std::sync::atomic::{AtomicU32, Ordering};

        use super::super::{Store, StoreSettings, connect};
        let db = connect("sqlite::memory:", 1)
            .await
            .expect("an in-memory database");
        let store = Store::new(
            db,
            StoreSettings {
                reminder_offsets: Vec::new(),
                create_leads_for_unknown_invitees: false,
                retry: RetryPolicy::default(),
            },
        );
        for (error, expected_tries) in [
            (DbErr::Conn(RuntimeErr::Internal("gone".into())), 5),
            (DbErr::Custom("bad".into()), 1),
        ] {
            let tries = AtomicU32::new(0);
            let result: Result<(), _> = store
                .with_retries("test", || {
                    tries.fetch_add(1, Ordering::SeqCst);
                    let error = error.clone();
                    async move { Err(error) }
                })
                .await;
            assert!(result.is_err(), "{error}");
            assert_eq!(tries.load(Ordering::SeqCst), expected_tries, "{error}");
        }
    }

    #[test]
    fn lost_connections_are_transient_and_bad_sql_is_not() {
        assert!(is_transient(&DbErr::Conn(RuntimeErr::Internal("gone".into()))));
        assert!(!is_transient(&DbErr::Custom("bad".into())));
        assert!(!is_transient(&DbErr::Exec(RuntimeErr::Internal("syntax".into()))));
    }
}
