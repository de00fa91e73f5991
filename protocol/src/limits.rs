//! Every size limit the decoder enforces, in one struct.

/// The largest payload any configuration may allow: 16 MiB - 1. Keeping the length below
/// 2^24 makes the first byte of every binary frame `0x00`, which is how the server tells
/// binary clients from text and HTTP clients.
pub const MAX_FRAME_BYTES_CAP: u32 = (1 << 24) - 1;

/// The largest `VECTOR_DIMENSION` a server may be configured with.
pub const MAX_VECTOR_DIMENSION: u32 = 65_536;

const _: () = assert!(
    MAX_FRAME_BYTES_CAP < 1 << 24,
    "first byte of a frame must be 0x00"
);
const _: () = assert!(Limits::DEFAULT_MAX_FRAME_BYTES <= MAX_FRAME_BYTES_CAP);

/// Size limits for decoding requests. Built from the server's configuration; every field is
/// also a flag and an environment variable of `sutra-storage` (see the README).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted, in bytes (`MAX_FRAME_BYTES`). At most
    /// [`MAX_FRAME_BYTES_CAP`].
    pub max_frame_bytes: u32,
    /// Longest concept id, in bytes (`MAX_ID_BYTES`).
    pub max_id_bytes: u32,
    /// Longest concept content, in bytes (`MAX_CONTENT_BYTES`).
    pub max_content_bytes: u32,
    /// Longest concept type or model name, in bytes (`MAX_NAME_BYTES`).
    pub max_name_bytes: u32,
    /// Most attributes on one concept (`MAX_ATTRIBUTES`).
    pub max_attributes: u32,
    /// Most bytes of all attribute keys and values of one concept together
    /// (`MAX_ATTRIBUTE_BYTES`).
    pub max_attribute_bytes: u32,
    /// Largest page a `QueryByType` returns (`MAX_QUERY_LIMIT`); larger requests are clamped.
    pub max_query_limit: u32,
    /// Most items in one `GetMany` or `StoreMany` (`MAX_BATCH_ITEMS`).
    pub max_batch_items: u32,
    /// The exact embedding length (`VECTOR_DIMENSION`).
    pub vector_dimension: u32,
    /// Most results of one `Search` (`MAX_SEARCH_K`).
    pub max_search_k: u32,
}

impl Limits {
    /// Default `MAX_FRAME_BYTES`: 4 MiB.
    pub const DEFAULT_MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;
    /// Default `MAX_ID_BYTES`.
    pub const DEFAULT_MAX_ID_BYTES: u32 = 512;
    /// Default `MAX_CONTENT_BYTES`: 1 MiB.
    pub const DEFAULT_MAX_CONTENT_BYTES: u32 = 1024 * 1024;
    /// Default `MAX_NAME_BYTES`.
    pub const DEFAULT_MAX_NAME_BYTES: u32 = 256;
    /// Default `MAX_ATTRIBUTES`.
    pub const DEFAULT_MAX_ATTRIBUTES: u32 = 64;
    /// Default `MAX_ATTRIBUTE_BYTES`: 64 KiB.
    pub const DEFAULT_MAX_ATTRIBUTE_BYTES: u32 = 64 * 1024;
    /// Default `MAX_QUERY_LIMIT`.
    pub const DEFAULT_MAX_QUERY_LIMIT: u32 = 1000;
    /// Default `MAX_BATCH_ITEMS`: an embedding service's L2 lookup for a 64-text batch is one
    /// request, with room to spare.
    pub const DEFAULT_MAX_BATCH_ITEMS: u32 = 256;
    /// Default `VECTOR_DIMENSION`.
    pub const DEFAULT_VECTOR_DIMENSION: u32 = 256;
    /// Default `MAX_SEARCH_K`.
    pub const DEFAULT_MAX_SEARCH_K: u32 = 1000;

    /// The largest encoded concept these limits admit, in bytes, as it appears inside a
    /// `GetConceptById` response body. Used to check that one concept always fits a frame.
    pub fn max_concept_bytes(&self) -> u64 {
        let strings = 4 * 4
            + u64::from(self.max_id_bytes)
            + u64::from(self.max_content_bytes)
            + 2 * u64::from(self.max_name_bytes);
        let attributes =
            4 + 8 * u64::from(self.max_attributes) + u64::from(self.max_attribute_bytes);
        let embedding = 1 + 4 + 4 * u64::from(self.vector_dimension);
        let times = 8 + 1 + 8;
        strings + attributes + embedding + times
    }

    /// Checks that the limits are usable together.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.max_frame_bytes == 0 || self.max_frame_bytes > MAX_FRAME_BYTES_CAP {
            return Err(LimitsError::FrameBytes {
                got: self.max_frame_bytes,
            });
        }
        if self.vector_dimension == 0 || self.vector_dimension > MAX_VECTOR_DIMENSION {
            return Err(LimitsError::VectorDimension {
                got: self.vector_dimension,
            });
        }
        for (name, value) in [
            ("MAX_ID_BYTES", self.max_id_bytes),
            ("MAX_NAME_BYTES", self.max_name_bytes),
            ("MAX_QUERY_LIMIT", self.max_query_limit),
            ("MAX_BATCH_ITEMS", self.max_batch_items),
            ("MAX_SEARCH_K", self.max_search_k),
        ] {
            if value == 0 {
                return Err(LimitsError::Zero { name });
            }
        }
        // A store request carries one concept plus a header and the ttl; its response header is
        // smaller than that, so this one check covers both directions.
        let needed = self.max_concept_bytes() + 64;
        if needed > u64::from(self.max_frame_bytes) {
            return Err(LimitsError::ConceptExceedsFrame {
                needed,
                max_frame_bytes: self.max_frame_bytes,
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            max_id_bytes: Self::DEFAULT_MAX_ID_BYTES,
            max_content_bytes: Self::DEFAULT_MAX_CONTENT_BYTES,
            max_name_bytes: Self::DEFAULT_MAX_NAME_BYTES,
            max_attributes: Self::DEFAULT_MAX_ATTRIBUTES,
            max_attribute_bytes: Self::DEFAULT_MAX_ATTRIBUTE_BYTES,
            max_query_limit: Self::DEFAULT_MAX_QUERY_LIMIT,
            max_batch_items: Self::DEFAULT_MAX_BATCH_ITEMS,
            vector_dimension: Self::DEFAULT_VECTOR_DIMENSION,
            max_search_k: Self::DEFAULT_MAX_SEARCH_K,
        }
    }
}

/// A configuration that the limits cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// `MAX_FRAME_BYTES` is zero or above the cap.
    #[error("MAX_FRAME_BYTES must be between 1 and {MAX_FRAME_BYTES_CAP}, got {got}")]
    FrameBytes {
        /// The configured value.
        got: u32,
    },
    /// `VECTOR_DIMENSION` is zero or above the cap.
    #[error("VECTOR_DIMENSION must be between 1 and {MAX_VECTOR_DIMENSION}, got {got}")]
    VectorDimension {
        /// The configured value.
        got: u32,
    },
    /// A limit that must be positive is zero.
    #[error("{name} must be at least 1")]
    Zero {
        /// The setting's name.
        name: &'static str,
    },
    /// The largest admissible concept would not fit in one frame.
    #[error(
        "MAX_FRAME_BYTES ({max_frame_bytes}) is smaller than the largest concept the other \
         limits admit ({needed} bytes); raise MAX_FRAME_BYTES or lower the content, attribute \
         or vector limits"
    )]
    ConceptExceedsFrame {
        /// Bytes one maximal concept needs.
        needed: u64,
        /// The configured maximum frame size.
        max_frame_bytes: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn frame_cap_is_enforced_at_the_boundary() {
        let mut limits = Limits {
            max_content_bytes: 1024,
            ..Limits::default()
        };
        limits.max_frame_bytes = MAX_FRAME_BYTES_CAP;
        assert_eq!(limits.validate(), Ok(()));
        limits.max_frame_bytes = MAX_FRAME_BYTES_CAP + 1;
        assert!(matches!(
            limits.validate(),
            Err(LimitsError::FrameBytes { .. })
        ));
    }

    #[test]
    fn a_maximal_concept_must_fit_a_frame() {
        let limits = Limits {
            max_frame_bytes: 1024 * 1024,
            ..Limits::default()
        };
        assert!(matches!(
            limits.validate(),
            Err(LimitsError::ConceptExceedsFrame { .. })
        ));
    }

    #[test]
    fn vector_dimension_bounds() {
        let mut limits = Limits {
            vector_dimension: 0,
            ..Limits::default()
        };
        assert!(limits.validate().is_err());
        limits.vector_dimension = MAX_VECTOR_DIMENSION + 1;
        assert!(limits.validate().is_err());
    }
}
