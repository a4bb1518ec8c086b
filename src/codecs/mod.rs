//! Codecs beyond JSON and raw bytes.

#[cfg(feature = "protobuf")]
pub mod protobuf;
