//! INT8 products for `EMBED_PRECISION=int8`: weights quantised once, symmetrically, per output
//! column (`s8`, scale = largest magnitude / 127); activations quantised per row at run time,
//! asymmetrically (`u8` with a zero point, so a row of GELU outputs or of a skewed residual
//! keeps all 256 levels); products summed exactly in `i32`; the result scaled back to f32.
//!
//! `x · W ≈ scale_x · scale_w · (Σ q_x · q_w − zero_x · Σ q_w)`, per row and column.
//!
//! On CPUs with AVX-512 VNNI one `vpdpbusd` multiplies 64 byte pairs and adds them in four-s
//! into 16 lanes; elsewhere a portable loop computes the same integers.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::simd::{self, Accumulate, SharedMut, PANEL};

/// Inputs multiplied and summed by one VNNI lane: weights are packed in groups of 4 rows.
const GROUP: usize = 4;

/// Bytes of one packed group of a panel: [`PANEL`] columns × [`GROUP`] inputs.
const GROUP_BYTES: usize = PANEL * GROUP;

/// Rows of one microkernel call: 6 rows × 4 registers of 16 columns is 24 accumulators of
/// AVX-512's 32.
const TILE_ROWS: usize = 6;

/// A dense layer's weights (`inputs × outputs`, as `input · W`) quantised per output column and
/// packed as panels of [`PANEL`] columns; within a panel, groups of [`GROUP`] consecutive inputs,
/// each group holding for every column its 4 weights side by side (the VNNI operand layout).
pub struct PackedInt8 {
    values: Vec<i8>,
    /// Per column (padded to whole panels): the weight of one quantisation step; 0 for padding.
    scales: Vec<f32>,
    /// Per column: Σ over inputs of the quantised weights (for the activations' zero point).
    sums: Vec<i32>,
    inputs: usize,
    outputs: usize,
    groups: usize,
}

impl PackedInt8 {
    /// Quantises and packs `weights`, `inputs × outputs` row-major.
    ///
    /// # Panics
    /// When `weights` does not hold `inputs × outputs` values.
    pub fn new(weights: &[f32], inputs: usize, outputs: usize) -> PackedInt8 {
        assert_eq!(weights.len(), inputs * outputs, "PackedInt8::new: shape");
        let panels = outputs.div_ceil(PANEL);
        let groups = inputs.div_ceil(GROUP);
        let mut scales = vec![0.0_f32; panels * PANEL];
        for (column, scale) in scales.iter_mut().enumerate().take(outputs) {
            let largest = (0..inputs)
                .map(|row| weights[row * outputs + column].abs())
                .fold(0.0_f32, f32::max);
            *scale = largest / 127.0;
        }
        let mut values = vec![0_i8; panels * groups * GROUP_BYTES];
        let mut sums = vec![0_i32; panels * PANEL];
        for (row, weights_row) in weights.chunks_exact(outputs.max(1)).enumerate() {
            let (group, lane) = (row / GROUP, row % GROUP);
            for (column, &weight) in weights_row.iter().enumerate() {
                let scale = scales[column];
                #[allow(clippy::cast_possible_truncation, reason = "clamped to ±127")]
                let q = if scale > 0.0 {
                    (weight / scale).round().clamp(-127.0, 127.0) as i8
                } else {
                    0
                };
                let (panel, within) = (column / PANEL, column % PANEL);
                values[(panel * groups + group) * GROUP_BYTES + within * GROUP + lane] = q;
                sums[column] += i32::from(q);
            }
        }
        PackedInt8 {
            values,
            scales,
            sums,
            inputs,
            outputs,
            groups,
        }
    }

    /// Output columns.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    fn panel(&self, panel: usize) -> &[i8] {
        let size = self.groups * GROUP_BYTES;
        &self.values[panel * size..(panel + 1) * size]
    }
}

/// Rows of activations quantised to `u8`: value ≈ scale · (q − zero). Reused across products so
/// its buffer is allocated once.
#[derive(Default)]
pub struct QuantizedRows {
    values: Vec<u8>,
    scales: Vec<f32>,
    zeros: Vec<i32>,
    rows: usize,
    /// Inputs per row, padded to whole groups (the padding is 0 and meets zero weights).
    width: usize,
}

/// Rows per task when quantising on several threads.
const QUANTIZE_ROWS_PER_TASK: usize = 16;

impl QuantizedRows {
    /// Quantises `rows × inputs` values, row-major, blocks of rows split across `threads`.
    ///
    /// # Panics
    /// When `input` holds fewer than `rows × inputs` values.
    pub fn quantize(&mut self, input: &[f32], rows: usize, inputs: usize, threads: usize) {
        assert!(
            input.len() >= rows * inputs,
            "QuantizedRows::quantize: input too short"
        );
        let width = self.fit(rows, inputs);
        let blocks =
            self.blocks(input[..rows * inputs].chunks(QUANTIZE_ROWS_PER_TASK * inputs.max(1)));
        each(blocks, threads, |(block, input)| {
            block.quantize(input, inputs, width);
        });
    }

    /// [`QuantizedRows::quantize`] of `step(input)`: `step` runs in place on each block of
    /// whole rows just before it is quantised (an activation, applied while the rows are in
    /// cache instead of in a pass of its own).
    ///
    /// # Panics
    /// When `input` holds fewer than `rows × inputs` values.
    pub fn quantize_after(
        &mut self,
        input: &mut [f32],
        rows: usize,
        inputs: usize,
        threads: usize,
        step: impl Fn(&mut [f32]) + Sync,
    ) {
        assert!(
            input.len() >= rows * inputs,
            "QuantizedRows::quantize_after: input too short"
        );
        let width = self.fit(rows, inputs);
        let input = &mut input[..rows * inputs];
        let blocks = self.blocks(input.chunks_mut(QUANTIZE_ROWS_PER_TASK * inputs.max(1)));
        each(blocks, threads, |(block, input)| {
            step(input);
            block.quantize(input, inputs, width);
        });
    }

    /// Sizes the buffers for `rows` rows of `inputs` values; returns the padded width.
    fn fit(&mut self, rows: usize, inputs: usize) -> usize {
        let width = inputs.div_ceil(GROUP) * GROUP;
        self.values.clear();
        self.values.resize(rows * width, 0);
        self.scales.clear();
        self.scales.resize(rows, 0.0);
        self.zeros.clear();
        self.zeros.resize(rows, 0);
        self.rows = rows;
        self.width = width;
        width
    }

    /// The buffers in blocks of [`QUANTIZE_ROWS_PER_TASK`] rows, each with its rows of input.
    fn blocks<T>(&mut self, inputs: impl Iterator<Item = T>) -> Vec<(Block<'_>, T)> {
        let rows = QUANTIZE_ROWS_PER_TASK;
        self.values
            .chunks_mut(rows * self.width.max(1))
            .zip(self.scales.chunks_mut(rows))
            .zip(self.zeros.chunks_mut(rows))
            .map(|((values, scales), zeros)| Block {
                values,
                scales,
                zeros,
            })
            .zip(inputs)
            .collect()
    }

    fn row(&self, row: usize) -> &[u8] {
        &self.values[row * self.width..(row + 1) * self.width]
    }
}

/// Runs `task` on every item: on this thread when `threads` is 1 (no hand-off to the pool),
/// else as rayon tasks.
fn each<T: Send>(items: Vec<T>, threads: usize, task: impl Fn(T) + Sync + Send) {
    if threads <= 1 {
        items.into_iter().for_each(task);
    } else {
        items.into_par_iter().for_each(task);
    }
}

/// Consecutive rows of [`QuantizedRows`], quantised by one task.
struct Block<'a> {
    values: &'a mut [u8],
    scales: &'a mut [f32],
    zeros: &'a mut [i32],
}

impl Block<'_> {
    /// Quantises `input` (these rows, `inputs` values each) into rows of `width` bytes.
    fn quantize(self, input: &[f32], inputs: usize, width: usize) {
        let rows = input
            .chunks_exact(inputs.max(1))
            .zip(self.values.chunks_exact_mut(width.max(1)));
        for ((row, out), (scale_out, zero_out)) in rows.zip(self.scales.iter_mut().zip(self.zeros))
        {
            let mut range = [0.0_f32; 2];
            simd::min_max(row, &mut range);
            // The range always holds 0, so zero is exact and padding costs nothing.
            let (low, high) = (range[0].min(0.0), range[1].max(0.0));
            let scale = if high > low {
                (high - low) / 255.0
            } else {
                1.0
            };
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "clamped to 0..=255"
            )]
            let zero = (-low / scale).round().clamp(0.0, 255.0) as i32;
            #[allow(clippy::cast_precision_loss, reason = "0..=255")]
            simd::quantize_u8(row, 1.0 / scale, zero as f32, out);
            *scale_out = scale;
            *zero_out = zero;
        }
    }
}

/// `dst (rows × outputs, dense) (+)= input · weights + bias`, with `input` the quantised rows,
/// overwriting `dst` or adding to it, the panels split across `threads` threads.
///
/// # Panics
/// When the shapes disagree (a bug in the caller, never input).
pub fn matmul_int8(
    dst: &mut [f32],
    input: &QuantizedRows,
    weights: &PackedInt8,
    bias: &[f32],
    mode: Accumulate,
    threads: usize,
) {
    let (rows, outputs) = (input.rows, weights.outputs);
    assert!(dst.len() >= rows * outputs, "matmul_int8: dst too short");
    assert_eq!(bias.len(), outputs, "matmul_int8: bias");
    assert_eq!(
        input.width,
        weights.groups * GROUP,
        "matmul_int8: input width"
    );
    assert!(weights.inputs <= input.width, "matmul_int8: inputs");
    if rows == 0 || outputs == 0 {
        return;
    }
    let panels = outputs.div_ceil(PANEL);
    let target = SharedMut(dst.as_mut_ptr());
    simd::for_panel_ranges(panels, threads, |range| {
        let mut sums = [[0_i32; PANEL]; TILE_ROWS];
        for panel in range {
            let first = panel * PANEL;
            let width = PANEL.min(outputs - first);
            let packed = weights.panel(panel);
            for start in (0..rows).step_by(TILE_ROWS) {
                let count = TILE_ROWS.min(rows - start);
                panel_sums(input, start, count, weights.groups, packed, &mut sums);
                for (offset, row_sums) in sums.iter().enumerate().take(count) {
                    let row = start + offset;
                    let (scale, zero) = (input.scales[row], input.zeros[row]);
                    let at = row * outputs + first;
                    // SAFETY: columns first..first + width of row `row` lie inside `dst`
                    // (checked above: row < rows, first + width ≤ outputs, rows · outputs ≤
                    // dst.len()); this panel belongs to this task alone, so no other task
                    // writes them, and `dst` stays borrowed until every task has returned.
                    let out =
                        unsafe { std::slice::from_raw_parts_mut(target.get().add(at), width) };
                    simd::dequantize(
                        out,
                        &row_sums[..width],
                        &weights.scales[first..first + width],
                        &weights.sums[first..first + width],
                        &bias[first..first + width],
                        scale,
                        zero,
                        mode,
                    );
                }
            }
        }
    });
}

/// Whether this CPU has AVX-512 VNNI (checked once).
fn has_vnni() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The integer sums of rows `start..start + count` (≤ [`TILE_ROWS`]) of `input` with one
/// packed panel, into `sums[row - start][column]`.
fn panel_sums(
    input: &QuantizedRows,
    start: usize,
    count: usize,
    groups: usize,
    panel: &[i8],
    sums: &mut [[i32; PANEL]; TILE_ROWS],
) {
    assert!(panel.len() >= groups * GROUP_BYTES && count <= TILE_ROWS);
    let rows: [&[u8]; TILE_ROWS] = std::array::from_fn(|i| input.row(start + i.min(count - 1)));
    for row in &rows {
        assert!(row.len() >= groups * GROUP, "panel_sums: row too short");
    }
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        // SAFETY: the CPU has AVX-512F and VNNI (checked just above), and every slice holds
        // what the kernel reads (asserted above: `groups` groups of each row and the panel).
        unsafe {
            match count {
                1 => vnni::tile::<1>(&rows, groups, panel, sums),
                2 => vnni::tile::<2>(&rows, groups, panel, sums),
                3 => vnni::tile::<3>(&rows, groups, panel, sums),
                4 => vnni::tile::<4>(&rows, groups, panel, sums),
                5 => vnni::tile::<5>(&rows, groups, panel, sums),
                _ => vnni::tile::<6>(&rows, groups, panel, sums),
            }
        }
        return;
    }
    portable_tile(&rows[..count], groups, panel, sums);
}

/// The same sums as the VNNI kernel, in plain Rust (any CPU; also its test reference).
fn portable_tile(
    rows: &[&[u8]],
    groups: usize,
    panel: &[i8],
    sums: &mut [[i32; PANEL]; TILE_ROWS],
) {
    for (row, out) in rows.iter().zip(sums.iter_mut()) {
        out.fill(0);
        for group in 0..groups {
            let a = &row[group * GROUP..(group + 1) * GROUP];
            let block = &panel[group * GROUP_BYTES..(group + 1) * GROUP_BYTES];
            for (total, w) in out.iter_mut().zip(block.chunks_exact(GROUP)) {
                *total += i32::from(a[0]) * i32::from(w[0])
                    + i32::from(a[1]) * i32::from(w[1])
                    + i32::from(a[2]) * i32::from(w[2])
                    + i32::from(a[3]) * i32::from(w[3]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(
    clippy::cast_ptr_alignment,
    reason = "loadu/storeu take a __m512i pointer but read and write at any alignment"
)]
mod vnni {
    use std::arch::x86_64::{
        __m512i, _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_si512,
        _mm512_storeu_si512,
    };

    use super::{GROUP, GROUP_BYTES, PANEL, TILE_ROWS};

    /// Sums of `R` rows with one panel: per group of 4 inputs, 4 loads of 16 columns × 4
    /// weights and, per row, one broadcast of its 4 activations and 4 `vpdpbusd`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512 VNNI; each of the first `R` rows must hold at
    /// least `groups * GROUP` bytes and `panel` at least `groups * GROUP_BYTES`.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn tile<const R: usize>(
        rows: &[&[u8]; TILE_ROWS],
        groups: usize,
        panel: &[i8],
        sums: &mut [[i32; PANEL]; TILE_ROWS],
    ) {
        let mut acc: [[__m512i; 4]; R] = [[_mm512_setzero_si512(); 4]; R];
        let weights = panel.as_ptr();
        for group in 0..groups {
            // SAFETY: group < groups, so the 256 bytes at group · GROUP_BYTES lie inside
            // `panel` (the caller's contract); loadu has no alignment requirement.
            let (w0, w1, w2, w3) = unsafe {
                let at = weights.add(group * GROUP_BYTES).cast::<__m512i>();
                (
                    _mm512_loadu_si512(at),
                    _mm512_loadu_si512(at.add(1)),
                    _mm512_loadu_si512(at.add(2)),
                    _mm512_loadu_si512(at.add(3)),
                )
            };
            for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                // SAFETY: the 4 bytes at group · GROUP lie inside the row (caller's contract).
                let four = unsafe {
                    row.as_ptr()
                        .add(group * GROUP)
                        .cast::<i32>()
                        .read_unaligned()
                };
                let a = _mm512_set1_epi32(four);
                acc[0] = _mm512_dpbusd_epi32(acc[0], a, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], a, w1);
                acc[2] = _mm512_dpbusd_epi32(acc[2], a, w2);
                acc[3] = _mm512_dpbusd_epi32(acc[3], a, w3);
            }
        }
        for (acc, out) in acc.iter().zip(sums.iter_mut()) {
            for (part, register) in acc.iter().enumerate() {
                // SAFETY: `out` holds PANEL = 64 i32; part < 4 stores 16 of them at 16 · part.
                unsafe {
                    _mm512_storeu_si512(
                        out.as_mut_ptr().add(16 * part).cast::<__m512i>(),
                        *register,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(count: usize, seed: u64) -> Vec<f32> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..count).map(|_| rng.f32() * 2.0 - 1.0).collect()
    }

    #[test]
    fn vnni_and_portable_sums_agree_exactly() {
        let (inputs, outputs) = (70, 130); // neither a whole group nor a whole panel
        let weights = PackedInt8::new(&random(inputs * outputs, 1), inputs, outputs);
        let mut rows = QuantizedRows::default();
        rows.quantize(&random(7 * inputs, 2), 7, inputs, 1);
        for panel in 0..outputs.div_ceil(PANEL) {
            for count in 1..=TILE_ROWS {
                let mut fast = [[0; PANEL]; TILE_ROWS];
                panel_sums(
                    &rows,
                    1,
                    count,
                    weights.groups,
                    weights.panel(panel),
                    &mut fast,
                );
                let mut slow = [[0; PANEL]; TILE_ROWS];
                let refs: Vec<&[u8]> = (1..=count).map(|r| rows.row(r)).collect();
                portable_tile(&refs, weights.groups, weights.panel(panel), &mut slow);
                assert_eq!(fast[..count], slow[..count], "panel {panel}, {count} rows");
            }
        }
    }

    #[test]
    fn the_int8_product_is_close_to_the_f32_one() {
        let (rows, inputs, outputs) = (9, 200, 100);
        let w = random(inputs * outputs, 3);
        let x = random(rows * inputs, 4);
        let mut expected = vec![0.5_f32; rows * outputs];
        for r in 0..rows {
            for c in 0..outputs {
                expected[r * outputs + c] += (0..inputs)
                    .map(|k| x[r * inputs + k] * w[k * outputs + c])
                    .sum::<f32>();
            }
        }
        let bias = random(outputs, 5);
        let packed = PackedInt8::new(&w, inputs, outputs);
        let mut quantized = QuantizedRows::default();
        quantized.quantize(&x, rows, inputs, 1);
        // Rounding moves each weight by at most half its column's step and each activation by
        // at most half its row's step, so output (r, c) is off by at most
        // Σ_k |x_rk| · step_c / 2 + |w_kc| · step_r / 2 + step_r · step_c / 4.
        let bound = |r: usize, c: usize| -> f32 {
            let row = &x[r * inputs..(r + 1) * inputs];
            let (low, high) = row
                .iter()
                .fold((0.0_f32, 0.0_f32), |(l, h), &v| (l.min(v), h.max(v)));
            let step_r = (high - low) / 255.0;
            let step_c = (0..inputs)
                .map(|k| w[k * outputs + c].abs())
                .fold(0.0, f32::max)
                / 127.0;
            (0..inputs)
                .map(|k| {
                    row[k].abs() * step_c / 2.0
                        + w[k * outputs + c].abs() * step_r / 2.0
                        + step_r * step_c / 4.0
                })
                .sum::<f32>()
                * 1.01
        };
        for (threads, mode) in [
            (1, Accumulate::Add),
            (2, Accumulate::Overwrite),
            (3, Accumulate::Add),
        ] {
            // Added to 0.5, or written over what was there: the same values either way.
            let mut out = match mode {
                Accumulate::Add => vec![0.5_f32; rows * outputs],
                Accumulate::Overwrite => vec![f32::NAN; rows * outputs],
            };
            let given: Vec<f32> = match mode {
                Accumulate::Add => bias.clone(),
                Accumulate::Overwrite => bias.iter().map(|b| b + 0.5).collect(),
            };
            matmul_int8(&mut out, &quantized, &packed, &given, mode, threads);
            let mut total = 0.0_f32;
            for r in 0..rows {
                for c in 0..outputs {
                    let error = (out[r * outputs + c] - bias[c] - expected[r * outputs + c]).abs();
                    assert!(
                        error <= bound(r, c),
                        "{threads} threads, {mode:?}: ({r}, {c}) off by {error}"
                    );
                    total += error;
                }
            }
            let mean = total / (rows * outputs) as f32;
            assert!(mean < 0.05, "{threads} threads: mean error {mean}");
        }
    }

    #[test]
    #[allow(
        clippy::float_cmp,
        reason = "the same arithmetic must give the same scales"
    )]
    fn quantizing_on_threads_and_after_a_step_gives_the_same_rows() {
        let (rows, inputs) = (37, 70); // blocks of 16 rows and a part block
        let x = random(rows * inputs, 6);
        let mut one = QuantizedRows::default();
        one.quantize(&x, rows, inputs, 1);
        let mut many = QuantizedRows::default();
        many.quantize(&x, rows, inputs, 3);
        let doubled: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
        let mut stepped = QuantizedRows::default();
        let mut input = x.clone();
        stepped.quantize_after(&mut input, rows, inputs, 2, |block| {
            for value in block {
                *value *= 2.0;
            }
        });
        assert_eq!(input, doubled, "the step ran once on every value");
        let mut reference = QuantizedRows::default();
        reference.quantize(&doubled, rows, inputs, 1);
        for row in 0..rows {
            assert_eq!(one.row(row), many.row(row), "row {row}");
            assert_eq!(one.scales[row], many.scales[row]);
            assert_eq!(one.zeros[row], many.zeros[row]);
            assert_eq!(stepped.row(row), reference.row(row), "row {row}");
            assert_eq!(stepped.scales[row], reference.scales[row]);
        }
    }

    #[test]
    fn constant_and_zero_rows_quantize_without_dividing_by_zero() {
        let mut rows = QuantizedRows::default();
        rows.quantize(&[0.0, 0.0, 0.0, 3.0, 3.0, 3.0], 2, 3, 1);
        assert_eq!(rows.width, 4);
        assert!(rows.scales.iter().all(|s| s.is_finite() && *s > 0.0));
        assert_eq!(rows.row(0), &[0, 0, 0, 0]);
        assert_eq!(rows.row(1), &[255, 255, 255, 0]);
    }
}
