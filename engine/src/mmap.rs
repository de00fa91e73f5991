//! One of the two places with `unsafe` code in the server (the other is `slots.rs`): shared
//! access to memory-mapped vector segments.
//!
//! A segment is mapped read-write once and never unmapped while any `MappedSegment` handle
//! exists. Slots are disjoint ranges of `dimension` f32 values. The vector store guarantees
//! that a slot is written only while nobody else can see it (freshly allocated, before the
//! concept that owns it is published) and is never reused while a reference to it exists
//! (slots are released by `Drop` of their last owner). So a write never overlaps a read.

#![allow(
    unsafe_code,
    reason = "memory-mapped vector segments; see the module docs"
)]

use std::fs::File;
use std::io;

use memmap2::MmapRaw;

const _: () = assert!(
    cfg!(target_endian = "little"),
    "vector segments store f32 little-endian by copying native values"
);

/// One mapped segment file.
pub(crate) struct MappedSegment {
    map: MmapRaw,
}

impl MappedSegment {
    /// Maps the whole of `file` read-write and shared.
    pub(crate) fn map(file: &File) -> io::Result<MappedSegment> {
        Ok(MappedSegment {
            map: MmapRaw::map_raw(file)?,
        })
    }

    fn check(&self, offset_values: usize, len: usize) -> usize {
        let start = offset_values.saturating_mul(4);
        let end = start.saturating_add(len.saturating_mul(4));
        assert!(
            (self.map.as_ptr() as usize).is_multiple_of(std::mem::align_of::<f32>()),
            "mappings are page-aligned"
        );
        assert!(
            end <= self.map.len(),
            "slot outside its segment: {start}..{end} of {}",
            self.map.len()
        );
        start
    }

    /// Writes `values` at `offset_values` (counted in f32 values).
    ///
    /// # Panics
    ///
    /// If the range is outside the segment (a bug in slot arithmetic).
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "page-aligned mapping, offset a multiple of 4 (checked)"
    )]
    pub(crate) fn write(&self, offset_values: usize, values: &[f32]) {
        let start = self.check(offset_values, values.len());
        // SAFETY: `check` keeps the range inside the mapping, which stays mapped for the
        // lifetime of `self`; the mapping is page-aligned and `start` is a multiple of 4, so
        // the destination is aligned for f32; the vector store hands each slot to one writer
        // and no reader while it is written (module docs), so nothing aliases the range.
        unsafe {
            let target = self.map.as_mut_ptr().add(start).cast::<f32>();
            std::ptr::copy_nonoverlapping(values.as_ptr(), target, values.len());
        }
    }

    /// The `len` values at `offset_values`.
    ///
    /// # Panics
    ///
    /// If the range is outside the segment (a bug in slot arithmetic).
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "page-aligned mapping, offset a multiple of 4 (checked)"
    )]
    pub(crate) fn read(&self, offset_values: usize, len: usize) -> &[f32] {
        let start = self.check(offset_values, len);
        // SAFETY: in bounds and aligned as in `write`; the returned slice borrows `self`, so
        // the mapping outlives it; the slot is not written while its owner can read it
        // (module docs). Every bit pattern is a valid f32.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start).cast::<f32>(), len) }
    }
}
