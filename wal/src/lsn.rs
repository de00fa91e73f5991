//! Log sequence numbers.

/// A log sequence number: the first record is 1, each record one more.
pub type Lsn = u64;
