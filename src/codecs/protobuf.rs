//! Protocol Buffers through `prost`.

use crate::codec::Codec;
use crate::error::{Result, ShoveError};

/// Encodes any `prost::Message`. Errors are [`ShoveError::Codec`] with codec `"protobuf"`.
pub struct ProtobufCodec;

impl<M: prost::Message + Default + Send + Sync + 'static> Codec<M> for ProtobufCodec {
    const NAME: &'static str = "protobuf";

    fn encode(value: &M) -> Result<Vec<u8>> {
        Ok(value.encode_to_vec())
    }

    fn decode(bytes: &[u8]) -> Result<M> {
        M::decode(bytes).map_err(|e| ShoveError::Codec {
            codec: "protobuf",
            source: Box::new(e),
        })
    }
}
