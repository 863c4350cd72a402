//! The typed configuration model (standalone YAML today, Kubernetes objects later) and its
//! loading: serde with deny_unknown_fields, every error collected with its field path, validate().

mod load;
mod types;
mod validate;

pub use load::{load_file, load_file_for_reload, parse, ConfigError, ConfigErrors};
pub use types::*;

#[cfg(test)]
mod tests;
