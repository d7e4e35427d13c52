//! Settings from Spin variables, with defaults that match a Dapr sidecar. spin.toml declares
//! each one; Spin reads it from `SPIN_VARIABLE_<NAME>` (`spin up`) or the SpinApp's `variables`
//! (SpinKube, also from a Secret). `wasmtime serve` has no Spin variables: there the app runs
//! composed with scripts/wasmtime-adapter, which answers from the same `SPIN_VARIABLE_*` env.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::ApiError;
use crate::transport::TimeLimits;

pub const DEFAULT_DAPR_HTTP_HOST: &str = "localhost";
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

/// Every setting, by its Spin variable name.
pub const VARIABLES: [&str; 12] = [
    "dapr_http_endpoint",
    "dapr_http_host",
    "dapr_http_port",
    "dapr_api_token",
    "app_api_token",
    "statestore_name",
    "pubsub_name",
    "pubsub_topic",
    "message_history_limit",
    "dapr_connect_timeout_ms",
    "dapr_first_byte_timeout_ms",
    "dapr_between_bytes_timeout_ms",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Base URL of the Dapr sidecar's HTTP API, without a trailing slash.
    pub dapr_url: String,
    /// Sent to Dapr as `dapr-api-token` when set (`dapr_api_token`).
    pub dapr_api_token: Option<String>,
    /// Required from Dapr on the subscription route when set (`app_api_token`).
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
    /// Reads every variable through `spin_sdk::variables::get`. An undefined one (under the
    /// wasmtime adapter: no `SPIN_VARIABLE_<NAME>` set) means unset; any other failure is an
    /// error, so that a token the provider could not read never leaves a route open.
    pub fn from_spin_variables() -> Result<Config, ApiError> {
        use spin_sdk::variables::{get, Error};
        let mut values = HashMap::new();
        for name in VARIABLES {
            match get(name) {
                Ok(value) => {
                    values.insert(name, value);
                }
                Err(Error::Undefined(_)) => {}
                Err(e) => {
                    return Err(config_error(format!(
                        "cannot read the Spin variable {name}: {e:?}"
                    )))
                }
            }
        }
        Config::from_lookup(|name| values.get(name).cloned())
    }

    /// Reads the settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ApiError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let name_or = |name: &str, default: &str| -> Result<String, ApiError> {
            let value = get(name).unwrap_or_else(|| default.to_string());
            if value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                Ok(value)
            } else {
                Err(config_error(format!(
                    "{name} must be a Dapr component or topic name (letters, digits, '-', '_', '.'), \
                     got {value:?}"
                )))
            }
        };

        // A full URL (Dapr's DAPR_HTTP_ENDPOINT), else the sidecar's host and port: localhost
        // beside the app, a Service's name in a cluster.
        let dapr_url = match get("dapr_http_endpoint") {
            Some(endpoint) => {
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(config_error(format!(
                        "dapr_http_endpoint must start with http:// or https://, got {endpoint:?}"
                    )));
                }
                endpoint.trim_end_matches('/').to_string()
            }
            None => {
                let host = get("dapr_http_host").unwrap_or_else(|| DEFAULT_DAPR_HTTP_HOST.to_string());
                if !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
                {
                    return Err(config_error(format!(
                        "dapr_http_host must be a host name or IPv4 address (letters, digits, '-', '.'), \
                         got {host:?}"
                    )));
                }
                let port = match get("dapr_http_port") {
                    None => DEFAULT_DAPR_HTTP_PORT,
                    Some(port) => match port.parse::<u16>() {
                        Ok(port) if port > 0 => port,
                        _ => {
                            return Err(config_error(format!(
                                "dapr_http_port must be a port number, got {port:?}"
                            )))
                        }
                    },
                };
                format!("http://{host}:{port}")
            }
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
            connect: millis("dapr_connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT_MS)?,
            first_byte: millis("dapr_first_byte_timeout_ms", DEFAULT_FIRST_BYTE_TIMEOUT_MS)?,
            between_bytes: millis("dapr_between_bytes_timeout_ms", DEFAULT_BETWEEN_BYTES_TIMEOUT_MS)?,
        };

        Ok(Config {
            dapr_url,
            dapr_api_token: get("dapr_api_token"),
            app_api_token: get("app_api_token"),
            state_store: name_or("statestore_name", "statestore")?,
            pubsub: name_or("pubsub_name", "pubsub")?,
            topic: name_or("pubsub_topic", "message-updated")?,
            history_limit: number("message_history_limit", DEFAULT_HISTORY_LIMIT, HISTORY_LIMITS)? as usize,
            time_limits,
        })
    }
}

fn config_error(message: String) -> ApiError {
    ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        format!("configuration error: {message}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ApiError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_match_a_dapr_sidecar() {
        let c = config(&[]).unwrap();
        assert_eq!(c.dapr_url, "http://localhost:3500");
        assert_eq!(
            (c.state_store.as_str(), c.pubsub.as_str(), c.topic.as_str()),
            ("statestore", "pubsub", "message-updated")
        );
        assert_eq!(c.history_limit, 100);
        assert_eq!((c.dapr_api_token, c.app_api_token), (None, None));
        let ms = Duration::from_millis;
        assert_eq!(
            c.time_limits,
            TimeLimits {
                connect: ms(2_000),
                first_byte: ms(5_000),
                between_bytes: ms(5_000)
            }
        );
    }

    #[test]
    fn dapr_http_port_moves_the_sidecar() {
        assert_eq!(
            config(&[("dapr_http_port", "3601")]).unwrap().dapr_url,
            "http://localhost:3601"
        );
    }

    #[test]
    fn dapr_http_host_names_a_sidecar_elsewhere() {
        let c = config(&[
            ("dapr_http_host", "dapr-spin-hello-dapr"),
            ("dapr_http_port", "3601"),
        ]);
        assert_eq!(c.unwrap().dapr_url, "http://dapr-spin-hello-dapr:3601");
        let err = config(&[("dapr_http_host", "http://x")]).unwrap_err();
        assert!(
            err.message.contains("dapr_http_host must be a host name"),
            "{err}"
        );
    }

    #[test]
    fn endpoint_wins_over_port_and_loses_its_trailing_slash() {
        let c = config(&[
            ("dapr_http_endpoint", "http://127.0.0.1:3999/"),
            ("dapr_http_port", "3601"),
        ])
        .unwrap();
        assert_eq!(c.dapr_url, "http://127.0.0.1:3999");
    }

    #[test]
    fn time_limits_in_milliseconds() {
        let c = config(&[
            ("dapr_connect_timeout_ms", "250"),
            ("dapr_first_byte_timeout_ms", "1500"),
            ("dapr_between_bytes_timeout_ms", "600000"),
        ])
        .unwrap();
        let ms = Duration::from_millis;
        assert_eq!(
            c.time_limits,
            TimeLimits {
                connect: ms(250),
                first_byte: ms(1_500),
                between_bytes: ms(600_000)
            }
        );
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        for (name, value) in [
            ("dapr_http_port", "abc"),
            ("dapr_http_port", "0"),
            ("dapr_http_endpoint", "localhost:3500"),
            ("message_history_limit", "0"),
            ("message_history_limit", "many"),
            ("statestore_name", "state/store"),
            ("dapr_connect_timeout_ms", "0"),
            ("dapr_first_byte_timeout_ms", "2s"),
            ("dapr_between_bytes_timeout_ms", "600001"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert_eq!(err.status, 500);
            assert!(err.message.contains(name), "{err}");
        }
    }

    #[test]
    fn spin_toml_declares_every_variable_for_the_component() {
        // Spin answers a component only the variables its manifest maps to it, and wants each
        // application variable to have a default or be required; the tokens stay out of logs.
        let manifest = include_str!("../spin.toml");
        let lines: Vec<&str> = manifest.lines().map(str::trim).collect();
        for name in VARIABLES {
            let declared = lines
                .iter()
                .find(|l| l.starts_with(&format!("{name} = {{ default = ")))
                .unwrap_or_else(|| panic!("[variables] lacks {name}"));
            assert_eq!(
                declared.contains("secret = true"),
                name.ends_with("_token"),
                "{declared}"
            );
            assert!(
                lines.contains(&format!("{name} = \"{{{{ {name} }}}}\"").as_str()),
                "[component.dapr-spin-hello.variables] lacks {name}"
            );
        }
        assert!(
            lines
                .contains(&format!("dapr_http_port = {{ default = \"{DEFAULT_DAPR_HTTP_PORT}\" }}").as_str()),
            "spin.toml's port is the component's default"
        );
    }

    #[test]
    fn blank_values_mean_unset() {
        assert_eq!(
            config(&[("dapr_api_token", " "), ("pubsub_name", "")]).unwrap(),
            config(&[]).unwrap()
        );
    }
}
