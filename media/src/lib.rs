//! dialin-media
pub mod mixer;
pub mod ports;
pub mod prompt;
pub mod rtcp;
pub mod rtp;
pub mod srtp;
pub mod stream;
pub mod tone;

pub mod codec;
pub use codec::{
    new_decoder, new_encoder, CodecConfig, CodecError, CodecKind, Decoder, Encoder, SampleRate,
};
pub mod dtmf;
pub mod jitter;
