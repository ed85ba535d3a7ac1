//! dialin-media

pub mod codec;
pub use codec::{
    new_decoder, new_encoder, CodecConfig, CodecError, CodecKind, Decoder, Encoder, SampleRate,
};
