//! Settings from WASI environment variables (`environment` in spin.toml, `spin up --env`,
//! `wasmtime serve --env`), with defaults that match a Dapr sidecar. No Spin-only interface:
//! the same component runs under Spin 3.6 (SpinKube), Spin 4 and `wasmtime serve`.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::ApiError;
use crate::transport::TimeLimits;

pub const DEFAULT_DAPR_HTTP_PORT: u16 = 3500;
pub const DEFAULT_HISTORY_LIMIT: u64 = 100;
const HISTORY_LIMITS: RangeInclusive<u64> = 1..=10_000;
/// Each sidecar call's limits, in ms. A local sidecar connects in well under a millisecond
/// and answers a state call in a few; these leave room for a slow store without letting a
/// stuck sidecar hold requests for long.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_FIRST_BYTE_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_BETWEEN_BYTES_TIMEOUT_MS: u64 = 5_000;
/// Up to Spin's own default of 600 s.
const TIMEOUTS_MS: RangeInclusive<u64> = 1..=600_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Base URL of the Dapr sidecar's HTTP API, without a trailing slash.
    pub dapr_url: String,
    /// Sent to Dapr as `dapr-api-token` when set (`DAPR_API_TOKEN`).
    pub dapr_api_token: Option<String>,
    /// Required from Dapr on the subscription route when set (`APP_API_TOKEN`).
    pub app_api_token: Option<String>,
    pub state_store: String,
    pub pubsub: String,
    pub topic: String,
    /// How many of a user's newest messages are kept.
    pub history_limit: usize,
    /// How long each sidecar call may wait.
    pub time_limits: TimeLimits,
}

impl Config {
    pub fn from_env() -> Result<Config, ApiError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ApiError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let name_or = |name: &str, default: &str| -> Result<String, ApiError> {
            let value = get(name).unwrap_or_else(|| default.to_string());
            if value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                Ok(value)
            } else {
                Err(config_error(format!("{name} must be a Dapr component or topic name (letters, digits, '-', '_', '.'), got {value:?}")))
            }
        };

        let dapr_url = match (get("DAPR_HTTP_ENDPOINT"), get("DAPR_HTTP_PORT")) {
            (Some(endpoint), _) => {
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(config_error(format!("DAPR_HTTP_ENDPOINT must start with http:// or https://, got {endpoint:?}")));
                }
                endpoint.trim_end_matches('/').to_string()
            }
            (None, Some(port)) => match port.parse::<u16>() {
                Ok(port) if port > 0 => format!("http://localhost:{port}"),
                _ => return Err(config_error(format!("DAPR_HTTP_PORT must be a port number, got {port:?}"))),
            },
            (None, None) => format!("http://localhost:{DEFAULT_DAPR_HTTP_PORT}"),
        };

        // A whole number from `range`, or `default` when unset.
        let number = |name: &str, default: u64, range: RangeInclusive<u64>| -> Result<u64, ApiError> {
            let Some(raw) = get(name) else { return Ok(default) };
            match raw.parse::<u64>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(config_error(format!(
                    "{name} must be a whole number from {} to {}, got {raw:?}",
                    range.start(),
                    range.end()
                ))),
            }
        };
        let millis = |name: &str, default: u64| number(name, default, TIMEOUTS_MS).map(Duration::from_millis);
        let time_limits = TimeLimits {
            connect: millis("DAPR_CONNECT_TIMEOUT_MS", DEFAULT_CONNECT_TIMEOUT_MS)?,
            first_byte: millis("DAPR_FIRST_BYTE_TIMEOUT_MS", DEFAULT_FIRST_BYTE_TIMEOUT_MS)?,
            between_bytes: millis("DAPR_BETWEEN_BYTES_TIMEOUT_MS", DEFAULT_BETWEEN_BYTES_TIMEOUT_MS)?,
        };

        Ok(Config {
            dapr_url,
            dapr_api_token: get("DAPR_API_TOKEN"),
            app_api_token: get("APP_API_TOKEN"),
            state_store: name_or("STATESTORE_NAME", "statestore")?,
            pubsub: name_or("PUBSUB_NAME", "pubsub")?,
            topic: name_or("PUBSUB_TOPIC", "message-updated")?,
            history_limit: number("MESSAGE_HISTORY_LIMIT", DEFAULT_HISTORY_LIMIT, HISTORY_LIMITS)? as usize,
            time_limits,
        })
    }
}

fn config_error(message: String) -> ApiError {
    ApiError::new(http::StatusCode::INTERNAL_SERVER_ERROR, format!("configuration error: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ApiError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_match_a_dapr_sidecar() {
        let c = config(&[]).unwrap();
        assert_eq!(c.dapr_url, "http://localhost:3500");
        assert_eq!((c.state_store.as_str(), c.pubsub.as_str(), c.topic.as_str()), ("statestore", "pubsub", "message-updated"));
        assert_eq!(c.history_limit, 100);
        assert_eq!((c.dapr_api_token, c.app_api_token), (None, None));
        let ms = Duration::from_millis;
        assert_eq!(c.time_limits, TimeLimits { connect: ms(2_000), first_byte: ms(5_000), between_bytes: ms(5_000) });
    }

    #[test]
    fn dapr_http_port_as_injected_by_dapr() {
        assert_eq!(config(&[("DAPR_HTTP_PORT", "3601")]).unwrap().dapr_url, "http://localhost:3601");
    }

    #[test]
    fn endpoint_wins_over_port_and_loses_its_trailing_slash() {
        let c = config(&[("DAPR_HTTP_ENDPOINT", "http://127.0.0.1:3999/"), ("DAPR_HTTP_PORT", "3601")]).unwrap();
        assert_eq!(c.dapr_url, "http://127.0.0.1:3999");
    }

    #[test]
    fn time_limits_in_milliseconds() {
        let c = config(&[("DAPR_CONNECT_TIMEOUT_MS", "250"), ("DAPR_FIRST_BYTE_TIMEOUT_MS", "1500"), ("DAPR_BETWEEN_BYTES_TIMEOUT_MS", "600000")]).unwrap();
        let ms = Duration::from_millis;
        assert_eq!(c.time_limits, TimeLimits { connect: ms(250), first_byte: ms(1_500), between_bytes: ms(600_000) });
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        for (name, value) in [
            ("DAPR_HTTP_PORT", "abc"),
            ("DAPR_HTTP_PORT", "0"),
            ("DAPR_HTTP_ENDPOINT", "localhost:3500"),
            ("MESSAGE_HISTORY_LIMIT", "0"),
            ("MESSAGE_HISTORY_LIMIT", "many"),
            ("STATESTORE_NAME", "state/store"),
            ("DAPR_CONNECT_TIMEOUT_MS", "0"),
            ("DAPR_FIRST_BYTE_TIMEOUT_MS", "2s"),
            ("DAPR_BETWEEN_BYTES_TIMEOUT_MS", "600001"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert_eq!(err.status, 500);
            assert!(err.message.contains(name), "{err}");
        }
    }

    #[test]
    fn blank_values_mean_unset() {
        assert_eq!(config(&[("DAPR_API_TOKEN", " "), ("PUBSUB_NAME", "")]).unwrap(), config(&[]).unwrap());
    }
}
