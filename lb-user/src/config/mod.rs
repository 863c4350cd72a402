//! The typed configuration model (standalone YAML today, Kubernetes objects later) and its
//! loading: serde with deny_unknown_fields, every error collected with its field path, validate().

mod cluster;
mod health;
mod l4;
mod load;
mod metrics;
mod route;
mod scalars;
mod tracing;
mod types;
mod validate;
mod validate_health;
mod validate_l4;
mod validate_route;

pub use cluster::*;
pub use health::*;
pub use l4::*;
pub use load::{check, load_file, load_file_for_reload, parse, ConfigError, ConfigErrors};
pub use metrics::Metrics as MetricsConfig;
pub use route::*;
pub use scalars::*;
pub use tracing::{Otlp, Tracing};
pub use types::*;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_health;
#[cfg(test)]
mod tests_l4;
#[cfg(test)]
mod tests_l7;

/// Copies of shared config items (routes, clusters), to compare them with a mapping's own.
#[cfg(test)]
pub(crate) fn owned<T: Clone>(items: &[std::sync::Arc<T>]) -> Vec<T> {
    items.iter().map(|i| T::clone(i)).collect()
}
