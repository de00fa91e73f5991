//! Write-once vector slots for the HNSW graph, laid out back to back so that a graph node's
//! vector is one computed address (no pointer to follow) that a search can prefetch. The
//! second place with `unsafe` code in the server (after `mmap.rs`): reading a published slot
//! as a plain `&[f32]`, and the prefetch hint.
//!
//! Each slot is a header (its state: 0 empty, 1 being written, 2 published; then `links`
//! words the graph keeps its layer-0 neighbour list in, so that expanding a node reads memory
//! next to its vector, as hnswlib lays nodes out), padded to 64 bytes, followed by `dimension`
//! values. Values are written with atomic stores, once, by the one writer that claimed the slot
//! (0 → 1), and published with a release store of 2. A reader gets the values only after an
//! acquire load that sees 2; from then on nothing writes them again, so the plain reads of the
//! returned slice never race with a write. The link words are only ever accessed atomically.

#![allow(
    unsafe_code,
    reason = "plain reads of published write-once slots, and prefetch; see the module docs"
)]

use std::sync::atomic::{AtomicU32, Ordering};

/// Words per cache line: headers are padded to a multiple.
const LINE: usize = 16;
const EMPTY: u32 = 0;
const WRITING: u32 = 1;
const PUBLISHED: u32 = 2;

/// A fixed number of write-once vectors of one dimension.
pub(crate) struct VectorSlots {
    words: Box<[AtomicU32]>,
    dimension: usize,
    links: usize,
    /// Words before each slot's values.
    header: usize,
    stride: usize,
}

impl VectorSlots {
    /// `slots` empty slots of `dimension` values and `links` link words each.
    pub(crate) fn new(slots: usize, dimension: usize, links: usize) -> VectorSlots {
        let header = (1 + links).div_ceil(LINE) * LINE;
        let stride = header + dimension.div_ceil(LINE) * LINE;
        VectorSlots {
            words: (0..slots * stride).map(|_| AtomicU32::new(EMPTY)).collect(),
            dimension,
            links,
            header,
            stride,
        }
    }

    /// The link words of `slot` (zero at first).
    pub(crate) fn links(&self, slot: usize) -> Option<&[AtomicU32]> {
        let start = slot * self.stride + 1;
        self.words.get(start..start + self.links)
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.words.len() * 4
    }

    /// Writes and publishes `vector` (of the slots' dimension) in `slot`; `false`, writing
    /// nothing, if the slot was claimed before or the arguments do not fit.
    pub(crate) fn write(&self, slot: usize, vector: &[f32]) -> bool {
        let start = slot * self.stride;
        let (Some(state), Some(values)) = (
            self.words.get(start),
            self.words
                .get(start + self.header..start + self.header + self.dimension),
        ) else {
            return false;
        };
        if vector.len() != self.dimension
            || state
                .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        for (word, value) in values.iter().zip(vector) {
            word.store(value.to_bits(), Ordering::Relaxed);
        }
        state.store(PUBLISHED, Ordering::Release);
        true
    }

    /// The vector in `slot`, once published.
    pub(crate) fn read(&self, slot: usize) -> Option<&[f32]> {
        let start = slot * self.stride;
        let values = self
            .words
            .get(start + self.header..start + self.header + self.dimension)?;
        if self.words.get(start)?.load(Ordering::Acquire) != PUBLISHED {
            return None;
        }
        // SAFETY: `values` is in bounds (checked by `get` above) and holds `dimension` words,
        // which have the size and alignment of f32. The acquire load saw PUBLISHED, so every
        // store to these words happened before this point, and none follows: a slot is
        // written only by the writer that moved it from EMPTY, before it published. Plain
        // reads of them therefore never race with a write.
        Some(unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<f32>(), values.len()) })
    }

    /// Asks the CPU to start loading `slot`'s header and first values (a hint: no effect on
    /// results).
    #[inline]
    pub(crate) fn prefetch(&self, slot: usize) {
        let start = slot * self.stride;
        if let Some(block) = self.words.get(start..start + self.header + 2 * LINE) {
            // The header and two lines of values; the hardware streams the rest once read.
            for line in block.iter().step_by(LINE) {
                prefetch(line);
            }
        }
    }
}

/// Asks the CPU to start loading the cache line of `value` (a hint: no effect on results).
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache; it never faults, reads nothing into the
    // program and is available on every x86_64 CPU (SSE). The pointer comes from a reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(value).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_written_once_and_read_only_once_published() {
        let slots = VectorSlots::new(4, 3, 20);
        assert_eq!(slots.read(1), None);
        assert!(slots.write(1, &[1.0, 2.0, 3.0]));
        assert_eq!(slots.read(1), Some(&[1.0, 2.0, 3.0][..]));
        assert!(!slots.write(1, &[4.0, 5.0, 6.0]), "written twice");
        assert_eq!(slots.read(1), Some(&[1.0, 2.0, 3.0][..]));
        assert!(!slots.write(2, &[1.0]), "wrong dimension");
        assert!(!slots.write(4, &[1.0, 2.0, 3.0]), "out of range");
        assert_eq!(slots.read(4), None);
        slots.prefetch(3);
        slots.prefetch(100);
        // Link words sit beside the values and never change them.
        let links = slots.links(1).unwrap();
        assert_eq!(links.len(), 20);
        links[19].store(7, Ordering::Relaxed);
        assert_eq!(slots.read(1), Some(&[1.0, 2.0, 3.0][..]));
        assert!(slots.links(4).is_none());
    }
}
