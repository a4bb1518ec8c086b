//! Turning messages into bytes and back. Codecs run in the engine, never in a transport.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, ShoveError};

/// Encodes and decodes a topic's messages. All functions are associated (no `self`).
pub trait Codec<M>: Send + Sync + 'static {
    /// A short name used in errors: `"json"`, `"raw"`, `"protobuf"`.
    const NAME: &'static str;
    /// Encodes a message to bytes.
    ///
    /// # Errors
    ///
    /// When the message cannot be represented in this codec.
    fn encode(value: &M) -> Result<Vec<u8>>;
    /// Decodes bytes to a message.
    ///
    /// # Errors
    ///
    /// When the bytes are not a valid encoding; the engine dead-letters such a delivery with reason
    /// `deserialize`.
    fn decode(bytes: &[u8]) -> Result<M>;
    /// Encodes to a UTF-8 string.
    ///
    /// # Errors
    ///
    /// As [`Codec::encode`], plus [`ShoveError::Codec`] when the bytes are not UTF-8.
    fn encode_to_string(value: &M) -> Result<String> {
        let bytes = Self::encode(value)?;
        String::from_utf8(bytes).map_err(|e| ShoveError::Codec {
            codec: Self::NAME,
            source: Box::new(e),
        })
    }
}

/// JSON through serde (the default codec). Errors are [`ShoveError::Serialization`].
pub struct JsonCodec;

impl<M: Serialize + DeserializeOwned + Send + Sync + 'static> Codec<M> for JsonCodec {
    const NAME: &'static str = "json";

    fn encode(value: &M) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(value)?)
    }

    fn decode(bytes: &[u8]) -> Result<M> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// Passes `Vec<u8>` through unchanged.
pub struct RawBytesCodec;

impl Codec<Vec<u8>> for RawBytesCodec {
    const NAME: &'static str = "raw";

    fn encode(value: &Vec<u8>) -> Result<Vec<u8>> {
        Ok(value.clone())
    }

    fn decode(bytes: &[u8]) -> Result<Vec<u8>> {
        Ok(bytes.to_vec())
    }
}
