//! A database that exists for one test or one tool run: an SQLite file in a temporary directory,
//! or a PostgreSQL database created on the test server and dropped afterwards.
//!
//! The PostgreSQL server is `TEST_DATABASE_URL` when it is set, else the README's default address
//! ([`DEFAULT_POSTGRES_URL`]) when a server answers there. Without either, PostgreSQL variants
//! are reported as not run, except in CI (`CI` set), where they run and fail.

use std::{path::PathBuf, sync::OnceLock, time::Duration};

use sea_orm::{ConnectionTrait, Database};

/// Where the README says a local PostgreSQL listens (user `postgres`, trust authentication).
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The PostgreSQL server tests create their databases on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresServer {
    /// `TEST_DATABASE_URL`, used as given: a wrong one fails the tests that need it.
    Configured(String),
    /// Nothing configured, and a server answered at [`DEFAULT_POSTGRES_URL`].
    Default(String),
    /// Nothing configured and nothing answering at the default address: why.
    Unreachable(String),
}

impl PostgresServer {
    /// The admin URL databases are created with, when there is a server.
    pub fn admin_url(&self) -> Option<&str> {
        match self {
            Self::Configured(url) | Self::Default(url) => Some(url),
            Self::Unreachable(_) => None,
        }
    }

    /// One line for people: which server, or why there is none and how to get one.
    pub fn describe(&self) -> String {
        match self {
            Self::Configured(url) => format!("{} (TEST_DATABASE_URL)", redacted(url)),
            Self::Default(url) => format!("{url} (the default address)"),
            Self::Unreachable(why) => format!(
                "TEST_DATABASE_URL is unset and no PostgreSQL answered at {DEFAULT_POSTGRES_URL} ({why}); \
                 start PostgreSQL there or set TEST_DATABASE_URL to an admin URL to run them"
            ),
        }
    }
}

/// The server for this process's tests, found once.
pub fn postgres_server() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => PostgresServer::Configured(url.trim().to_owned()),
        _ => match probe(DEFAULT_POSTGRES_URL) {
            Ok(()) => PostgresServer::Default(DEFAULT_POSTGRES_URL.to_owned()),
            Err(why) => PostgresServer::Unreachable(why),
        },
    })
}

/// Whether CI is running the tests: there a missing PostgreSQL is a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|value| !value.is_empty())
}

/// Connects and runs `SELECT 1`, on a thread of its own so it works inside or outside a runtime.
fn probe(url: &'static str) -> Result<(), String> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let connected = tokio::time::timeout(Duration::from_secs(3), async {
                let db = Database::connect(url).await.map_err(|e| e.to_string())?;
                db.execute_unprepared("SELECT 1")
                    .await
                    .map_err(|e| e.to_string())?;
                db.close().await.map_err(|e| e.to_string())
            })
            .await;
            connected.unwrap_or_else(|_| Err("timed out after 3 s".into()))
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the probe panicked".into()))
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    drop_on_exit: Option<(String, String)>,
}

impl TestDatabase {
    /// A fresh database on `backend`. PostgreSQL needs a server ([`postgres_server`]).
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path: PathBuf = dir.path().join("meetings.db");
                Self {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    backend,
                    _dir: Some(dir),
                    drop_on_exit: None,
                }
            }
            Backend::Postgres => {
                let server = postgres_server();
                let admin_url = server
                    .admin_url()
                    .unwrap_or_else(|| panic!("this test needs PostgreSQL: {}", server.describe()))
                    .to_owned();
                let name = format!("calendly_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("{} must reach PostgreSQL: {e}", server.describe()));
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create the test database");
                admin.close().await.ok();
                Self {
                    url: with_database(&admin_url, &name),
                    backend,
                    _dir: None,
                    drop_on_exit: Some((admin_url, name)),
                }
            }
        }
    }

    /// PostgreSQL, the production database, when there is a server; otherwise SQLite, said on
    /// stderr. In CI a missing server is an error rather than a silent fall-back.
    pub async fn preferred() -> Self {
        let server = postgres_server();
        if server.admin_url().is_some() || in_ci() {
            return Self::create(Backend::Postgres).await;
        }
        eprintln!("running on SQLite instead of PostgreSQL: {}", server.describe());
        Self::create(Backend::Sqlite).await
    }

    pub fn is_postgres(&self) -> bool {
        self.backend == Backend::Postgres
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.drop_on_exit.take() else {
            return;
        };
        // Drop runs outside async code (and possibly while panicking): use a private runtime on
        // its own thread, and FORCE so lingering pool connections do not block it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let admin = Database::connect(&admin_url).await?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database: {dropped:?}");
        }
    }
}

/// `postgres://u@h:5432/postgres?x=y` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut result = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::{redacted, with_database};

    #[test]
    fn passwords_are_left_out_of_messages() {
        assert_eq!(
            redacted("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redacted(DEFAULT), DEFAULT);
    }

    const DEFAULT: &str = super::DEFAULT_POSTGRES_URL;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:5432", "x"), "postgres://h:5432/x");
    }
}
