//! Error codes on the wire and the decoder's error types.

use std::fmt;

/// A stable numeric error code sent in every error response.
///
/// Codes are never renumbered or reused; new codes are only appended. A client that meets a
/// code it does not know treats it like [`ErrorCode::Internal`].
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The payload was delimited but its header or body could not be parsed.
    MalformedFrame = 1,
    /// The length prefix exceeds the server's maximum frame size. The server closes the
    /// connection after sending this.
    FrameTooLarge = 2,
    /// The payload's protocol version is not one the server speaks.
    UnsupportedVersion = 3,
    /// The opcode is not a known request.
    UnknownOpcode = 4,
    /// A field is invalid: bad UTF-8, an empty or too long id, a non-finite vector value, a
    /// count over a limit.
    InvalidArgument = 5,
    /// The embedding's length differs from the server's `VECTOR_DIMENSION`.
    DimensionMismatch = 6,
    /// No concept with that id.
    NotFound = 7,
    /// A server limit was reached (connections, shutting down); retry later.
    Busy = 8,
    /// The server failed; details are in its log, not in the reply.
    Internal = 9,
    /// The write could not be made durable (disk full, I/O error, or the write-ahead log
    /// refuses writes after an earlier failure) and was not applied.
    StorageUnavailable = 10,
    /// The store holds `MAX_CONCEPTS` concepts and its `EVICTION_POLICY` is `none`: a write of
    /// a new id is refused (updates of held ids still succeed).
    Full = 11,
    /// A learn request reached a server started without an embedding model.
    NoModel = 12,
    /// The server requires authentication (`SUTRA_AUTH_TOKEN`) and this connection has not
    /// authenticated, or gave a wrong token.
    Unauthenticated = 13,
}

impl ErrorCode {
    /// All codes, in numeric order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::MalformedFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownOpcode,
        ErrorCode::InvalidArgument,
        ErrorCode::DimensionMismatch,
        ErrorCode::NotFound,
        ErrorCode::Busy,
        ErrorCode::Internal,
        ErrorCode::StorageUnavailable,
        ErrorCode::Full,
        ErrorCode::NoModel,
        ErrorCode::Unauthenticated,
    ];

    /// The code's wire value.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a wire value; unknown values map to [`ErrorCode::Internal`] so that an
    /// old client still reports a newer server's error.
    pub fn from_u16(value: u16) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_u16() == value)
            .unwrap_or(ErrorCode::Internal)
    }

    /// The code's name as used in `PROTOCOL.md` and in text-mode replies.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "MalformedFrame",
            ErrorCode::FrameTooLarge => "FrameTooLarge",
            ErrorCode::UnsupportedVersion => "UnsupportedVersion",
            ErrorCode::UnknownOpcode => "UnknownOpcode",
            ErrorCode::InvalidArgument => "InvalidArgument",
            ErrorCode::DimensionMismatch => "DimensionMismatch",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::Busy => "Busy",
            ErrorCode::Internal => "Internal",
            ErrorCode::StorageUnavailable => "StorageUnavailable",
            ErrorCode::Full => "Full",
            ErrorCode::NoModel => "NoModel",
            ErrorCode::Unauthenticated => "Unauthenticated",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The byte stream can no longer be split into frames. The peer gets an error and the
/// connection is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced payload length.
        len: u32,
        /// The configured maximum payload length.
        max: u32,
    },
    /// An outgoing message could not be encoded within the limits.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The wire code sent before closing.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::Encode(_) | FrameError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// One delimited message could not be decoded. The peer gets an error response and the
/// connection stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload ended inside a field.
    #[error("message truncated while reading {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes remain after the last field of the message.
    #[error("{count} unexpected trailing bytes after the message body")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// The payload's protocol version is not supported.
    #[error("unsupported protocol version {got} (this server speaks version {supported})")]
    UnsupportedVersion {
        /// The version in the payload.
        got: u8,
        /// The version this crate speaks.
        supported: u8,
    },
    /// The opcode is unknown.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// A string field is not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A field is longer than its limit.
    #[error("{field} is {len} bytes, over the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A count (attributes, concepts) is over its limit.
    #[error("{field} has {count} entries, over the limit of {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// The announced count.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// A required field is empty.
    #[error("{field} must not be empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// An option or boolean tag is neither 0 nor 1, or a status byte is unknown.
    #[error("{field} has invalid tag {tag}")]
    InvalidTag {
        /// The field.
        field: &'static str,
        /// The tag byte.
        tag: u8,
    },
    /// An attribute key appears twice.
    #[error("attribute key {key:?} appears more than once")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// The embedding's length is not the server's vector dimension.
    #[error("embedding has {got} values, expected {expected}")]
    DimensionMismatch {
        /// The server's `VECTOR_DIMENSION`.
        expected: u32,
        /// The length that was sent.
        got: u32,
    },
    /// An embedding value is NaN or infinite.
    #[error("embedding value at index {index} is not finite")]
    NonFiniteValue {
        /// The position of the first bad value.
        index: usize,
    },
    /// A numeric field is out of its allowed range.
    #[error("{field} must be {expected}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The allowed range, in words.
        expected: &'static str,
    },
}

impl DecodeError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Truncated { .. }
            | DecodeError::TrailingBytes { .. }
            | DecodeError::InvalidTag { .. } => ErrorCode::MalformedFrame,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownOpcode(_) => ErrorCode::UnknownOpcode,
            DecodeError::InvalidUtf8 { .. }
            | DecodeError::TooLong { .. }
            | DecodeError::TooMany { .. }
            | DecodeError::Empty { .. }
            | DecodeError::DuplicateKey { .. }
            | DecodeError::NonFiniteValue { .. }
            | DecodeError::OutOfRange { .. } => ErrorCode::InvalidArgument,
            DecodeError::DimensionMismatch { .. } => ErrorCode::DimensionMismatch,
        }
    }
}

/// A message could not be encoded within the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded payload is larger than the maximum frame size.
    #[error("encoded frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The payload length.
        len: usize,
        /// The maximum payload length.
        max: u32,
    },
    /// A field is longer than a u32 length can describe.
    #[error("{field} is too long to encode")]
    FieldTooLong {
        /// The field.
        field: &'static str,
    },
}
