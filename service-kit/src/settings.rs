//! Reading settings from the environment into real types.
//!
//! Parsing goes through a lookup function rather than `std::env`, so tests pass a map. Every
//! error names the variable, and `main` prints it as one line before exiting.

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

/// Where a variable's value comes from: the process environment or a test's map.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A lookup over the process environment (after `.env` has been loaded).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A lookup over a fixed map, for tests.
pub fn map_lookup(values: HashMap<String, String>) -> impl Fn(&str) -> Option<String> {
    move |name| values.get(name).cloned()
}

/// A lookup over a handful of literal `(name, value)` pairs, as tests write settings.
pub fn pairs_lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    map_lookup(
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct SettingError {
    pub variable: String,
    pub message: String,
}

impl SettingError {
    pub fn new(variable: &str, message: impl Into<String>) -> Self {
        Self {
            variable: variable.to_owned(),
            message: message.into(),
        }
    }
}

/// The value of `name`, trimmed; unset and blank are the same.
pub fn optional(lookup: Lookup<'_>, name: &str) -> Option<String> {
    lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Parses `name` with `FromStr`, or gives `default` when it is unset.
pub fn parsed<T>(lookup: Lookup<'_>, name: &str, default: T) -> Result<T, SettingError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match optional(lookup, name) {
        None => Ok(default),
        Some(value) => value
            .parse()
            .map_err(|e| SettingError::new(name, format!("cannot parse {value:?}: {e}"))),
    }
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`).
pub fn flag(lookup: Lookup<'_>, name: &str, default: bool) -> Result<bool, SettingError> {
    match optional(lookup, name).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
        Some(v) => Err(SettingError::new(
            name,
            format!("expected true or false, got {v:?}"),
        )),
    }
}

/// A whole number of seconds.
pub fn seconds(lookup: Lookup<'_>, name: &str, default: Duration) -> Result<Duration, SettingError> {
    parsed(lookup, name, default.as_secs()).map(Duration::from_secs)
}

/// A positive number of seconds that may have a fraction (`0.25`), for intervals under a second.
pub fn positive_seconds(lookup: Lookup<'_>, name: &str, default: Duration) -> Result<Duration, SettingError> {
    let seconds: f64 = parsed(lookup, name, default.as_secs_f64())?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(SettingError::new(
            name,
            format!("must be above 0 seconds, got {seconds}"),
        ));
    }
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| SettingError::new(name, format!("{seconds} seconds is out of range")))
}

/// `production` or `development`, from `APP_ENV`, else `NODE_ENV` (so a seed user's `.env` keeps
/// working), else development.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, SettingError> {
        let (variable, value) = match optional(lookup, "APP_ENV") {
            Some(value) => ("APP_ENV", value),
            None => match optional(lookup, "NODE_ENV") {
                Some(value) => ("NODE_ENV", value),
                None => return Ok(Self::Development),
            },
        };
        match value.to_ascii_lowercase().as_str() {
            "production" | "prod" => Ok(Self::Production),
            "development" | "dev" | "test" | "local" => Ok(Self::Development),
            other => Err(SettingError::new(
                variable,
                format!("expected production or development, got {other:?}"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

/// A secret value whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_seconds_take_fractions_and_refuse_zero_and_junk() {
        let read =
            |value: &str| positive_seconds(&pairs_lookup(&[("T", value)]), "T", Duration::from_secs(1));
        assert_eq!(read("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(read("2"), Ok(Duration::from_secs(2)));
        assert_eq!(
            positive_seconds(&pairs_lookup(&[]), "T", Duration::from_millis(250)),
            Ok(Duration::from_millis(250))
        );
        for bad in ["0", "-1", "NaN", "inf", "soon", "1e30"] {
            assert!(read(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn node_env_is_honoured_when_app_env_is_unset() {
        let env = pairs_lookup(&[("NODE_ENV", "production")]);
        assert_eq!(Environment::from_lookup(&env), Ok(Environment::Production));
        let env = pairs_lookup(&[("NODE_ENV", "production"), ("APP_ENV", "development")]);
        assert_eq!(Environment::from_lookup(&env), Ok(Environment::Development));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let env = pairs_lookup(&[("PORT", "eighty")]);
        let error = parsed::<u16>(&env, "PORT", 3001).expect_err("not a number");
        assert_eq!(error.variable, "PORT");
        assert!(error.to_string().starts_with("PORT: "));
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "[redacted]");
    }
}
