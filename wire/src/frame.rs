//! Frames: one version byte followed by the postcard encoding of one message.
//!
//! Decoding is total: any byte string gives either a message or a [`DecodeError`], never a
//! panic and never an allocation much larger than the input (postcard pre-allocates
//! cautiously and our types are not recursive).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{Ack, Envelope, Heartbeat, RunAck};

/// The wire version this build writes and the only one it reads.
pub const WIRE_VERSION: u8 = 1;

/// Default upper bound on a frame's size: 1 MiB, well above a full batch (512 events of a
/// few hundred bytes) and small enough that a hostile peer cannot make a node allocate much.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Content type of a frame in AMQP messages.
pub const CONTENT_TYPE: &str = "application/x-auditflow-postcard";

/// A message that travels as a frame. Sealed: only the wire types implement it.
pub trait Message: Serialize + DeserializeOwned + sealed::Sealed {
    /// Name for error messages and metrics.
    const NAME: &'static str;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Envelope {}
    impl Sealed for super::Ack {}
    impl Sealed for super::RunAck {}
    impl Sealed for super::Heartbeat {}
}

impl Message for Envelope {
    const NAME: &'static str = "envelope";
}
impl Message for Ack {
    const NAME: &'static str = "ack";
}
impl Message for RunAck {
    const NAME: &'static str = "run_ack";
}
impl Message for Heartbeat {
    const NAME: &'static str = "heartbeat";
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame has no bytes at all.
    #[error("empty frame")]
    Empty,
    /// The frame is larger than the decoder accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversize {
        /// The frame's length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The frame was written by a wire version this build does not read.
    #[error("unknown wire version {found} (this build reads version {expected})")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        expected: u8,
    },
    /// The frame ended in the middle of a message.
    #[error("truncated {message} frame")]
    Truncated {
        /// Which message was being decoded.
        message: &'static str,
    },
    /// Bytes were left over after a complete message.
    #[error("{count} trailing bytes after a complete {message}")]
    TrailingBytes {
        /// Which message was decoded.
        message: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// The bytes are not a valid encoding of the message.
    #[error("malformed {message}: {detail}")]
    Malformed {
        /// Which message was being decoded.
        message: &'static str,
        /// postcard's description of the problem.
        detail: String,
    },
}

impl DecodeError {
    /// A short, bounded label for metrics and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Oversize { .. } => "oversize",
            DecodeError::UnknownVersion { .. } => "unknown_version",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::Malformed { .. } => "malformed",
        }
    }
}

/// Encodes a message as a frame.
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(WIRE_VERSION);
    // Serializing into a Vec only fails for types serde cannot represent in postcard (maps of
    // unknown length, `deserialize_any`); the wire types are built so that this cannot happen.
    postcard::to_extend(message, out).expect("wire types always serialize with postcard")
}

/// Decodes a frame of at most [`MAX_FRAME_BYTES`].
pub fn decode<M: Message>(frame: &[u8]) -> Result<M, DecodeError> {
    decode_with_limit(frame, MAX_FRAME_BYTES)
}

/// Decodes a frame of at most `max` bytes.
pub fn decode_with_limit<M: Message>(frame: &[u8], max: usize) -> Result<M, DecodeError> {
    if frame.len() > max {
        return Err(DecodeError::Oversize { len: frame.len(), max });
    }
    let (&version, body) = frame.split_first().ok_or(DecodeError::Empty)?;
    if version != WIRE_VERSION {
        return Err(DecodeError::UnknownVersion { found: version, expected: WIRE_VERSION });
    }
    match postcard::take_from_bytes::<M>(body) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(DecodeError::TrailingBytes { message: M::NAME, count: rest.len() }),
        Err(postcard::Error::DeserializeUnexpectedEnd) => {
            Err(DecodeError::Truncated { message: M::NAME })
        }
        Err(e) => Err(DecodeError::Malformed { message: M::NAME, detail: e.to_string() }),
    }
}
