//! The swarm part of the Docker Engine API over shoal's own types, so that the docker CLI
//! (and tools that speak the Engine API) drive a shoal cluster unchanged.
//!
//! Pure: no I/O, no clock. shoal-api serves the routes and calls the daemon's backend;
//! this crate turns shoal's nodes, services, tasks and networks into the Engine API's JSON
//! shapes (the `bollard-stubs` models) and a docker `ServiceSpec` into shoal's, refusing by
//! name what shoal cannot do instead of dropping it.
//!
//! - [`version`]: which API versions are served and how a request's path names one.
//! - [`spec`]: docker's `ServiceSpec` to shoal's and back.
//! - [`objects`]: nodes, services, tasks, networks, `/info` and `/version`.
//! - [`filters`]: the `filters` query parameter.
//! - [`events`]: `/events`: shoal's events as `EventMessage`s, docker's timestamps and filters.

pub mod containers;
pub mod events;
pub mod filters;
pub mod objects;
pub mod spec;
pub mod version;

pub use bollard_stubs::models;

/// Keys the docker CLI spells differently from the Engine API document (Go's JSON decoding
/// ignores case, serde does not): the CLI's spelling to the models'.
const GO_SPELLINGS: &[(&str, &str)] = &[("Healthcheck", "HealthCheck")];

/// Keys older clients send that later API versions dropped, with nothing for shoal to do:
/// `CheckDuplicate` (API < 1.44) asks what shoal always does, refusing a name in use.
const RETIRED: &[&str] = &["CheckDuplicate"];

fn respell(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for key in RETIRED {
                map.remove(*key);
            }
            for (go, model) in GO_SPELLINGS {
                if let Some(x) = map.remove(*go) {
                    map.insert((*model).to_string(), x);
                }
            }
            map.values_mut().for_each(respell);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(respell),
        _ => {}
    }
}

/// A request body as an Engine API model. A key the model does not have is refused by its
/// path rather than dropped: it is something the client asked for that shoal would not do.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DockerError> {
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| DockerError::Invalid(format!("the request body is not JSON: {e}")))?;
    respell(&mut value);
    let mut unknown = Vec::new();
    // The path's `?` segments are the models' `Option`s, not keys.
    let parsed = serde_ignored::deserialize(value, |path| {
        unknown.push(path.to_string().replace(".?", ""))
    })
    .map_err(|e| DockerError::Invalid(format!("invalid request body: {e}")))?;
    if !unknown.is_empty() {
        return Err(DockerError::Invalid(format!(
            "unknown field{} {} in the request: shoal does not know {}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", "),
            if unknown.len() == 1 { "it" } else { "them" },
        )));
    }
    Ok(parsed)
}

/// What a Docker Engine API request asked that shoal refuses; shown to docker's users as
/// "Error response from daemon: <message>".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerError {
    /// The request is malformed or names a value shoal does not accept (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// A field docker knows that shoal does not implement (HTTP 400): named, never dropped.
    #[error("{field} is not supported by shoal")]
    Unsupported { field: String },
    /// The client speaks an API version shoal does not serve (HTTP 400).
    #[error(
        "client version {0} is too old. Minimum supported API version is {min}, please upgrade your client to a newer version",
        min = version::MIN
    )]
    TooOld(String),
    /// The client asked for a version newer than shoal serves (HTTP 400).
    #[error(
        "client version {0} is too new. Maximum supported API version is {max}",
        max = version::MAX
    )]
    TooNew(String),
}

impl DockerError {
    pub(crate) fn unsupported(field: &str) -> DockerError {
        DockerError::Unsupported {
            field: field.to_string(),
        }
    }
}
