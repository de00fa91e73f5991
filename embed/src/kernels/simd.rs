//! The f32 kernels: gemm products over packed panels, and the element-wise loops compiled a
//! second time for AVX2 + FMA (`dispatched!`), which the INT8 products reuse.

use std::sync::OnceLock;

use gemm::Parallelism;

/// How the right operand of a product is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rhs {
    /// `k × n`, row-major: element (i, j) at `i * stride + j`.
    RowMajor,
    /// The transpose of a row-major `n × k` matrix: element (i, j) at `j * stride + i`.
    Transposed,
}

/// Whether a product overwrites its destination or adds to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulate {
    /// `dst = scale · lhs · rhs`.
    Overwrite,
    /// `dst += scale · lhs · rhs`.
    Add,
}

/// A strided row-major view: `rows × cols` values, row `r` starting at `r * stride`.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between the starts of two rows, at least `cols`.
    pub stride: usize,
}

impl Shape {
    /// A dense `rows × cols` matrix.
    pub fn dense(rows: usize, cols: usize) -> Shape {
        Shape {
            rows,
            cols,
            stride: cols,
        }
    }

    /// The number of values a slice must hold for this view (0 when empty).
    fn span(self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.stride + self.cols
        }
    }
}

/// Products smaller than this many multiply-adds run on the calling thread: splitting them
/// costs more than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// `dst (m × n) [+]= scale · lhs (m × k) · rhs (k × n)`, all strided views of slices.
///
/// # Panics
/// When the shapes disagree or a view runs past its slice (a bug in the caller, never input).
pub fn matmul(
    dst: &mut [f32],
    dst_shape: Shape,
    lhs: &[f32],
    lhs_shape: Shape,
    rhs: &[f32],
    rhs_stride: usize,
    rhs_layout: Rhs,
    scale: f32,
    accumulate: Accumulate,
    threads: usize,
) {
    let (m, k, n) = (lhs_shape.rows, lhs_shape.cols, dst_shape.cols);
    assert_eq!(dst_shape.rows, m, "matmul: dst rows");
    assert!(
        dst_shape.stride >= n && lhs_shape.stride >= k,
        "matmul: strides"
    );
    let rhs_view = match rhs_layout {
        Rhs::RowMajor => Shape {
            rows: k,
            cols: n,
            stride: rhs_stride,
        },
        Rhs::Transposed => Shape {
            rows: n,
            cols: k,
            stride: rhs_stride,
        },
    };
    assert!(rhs_view.stride >= rhs_view.cols, "matmul: rhs stride");
    assert!(dst.len() >= dst_shape.span(), "matmul: dst too short");
    assert!(lhs.len() >= lhs_shape.span(), "matmul: lhs too short");
    assert!(rhs.len() >= rhs_view.span(), "matmul: rhs too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if accumulate == Accumulate::Overwrite {
            for row in dst.chunks_mut(dst_shape.stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let (rhs_cs, rhs_rs) = match rhs_layout {
        Rhs::RowMajor => (1, rhs_stride as isize),
        Rhs::Transposed => (rhs_stride as isize, 1),
    };
    // Rayon(1) rather than None even on one thread: gemm sizes its packing buffer to the
    // product under Rayon but to 768 columns under None, a fresh 1 MB allocation (and page
    // clearing) per call for the few-token products of short texts.
    let parallelism = if m * n * k >= PARALLEL_MIN_MACS {
        Parallelism::Rayon(threads.max(1))
    } else {
        Parallelism::Rayon(1)
    };
    // SAFETY: every element gemm reads or writes lies inside its slice: the asserts above
    // check the last element of each strided view (rows, columns and strides are those
    // passed to gemm below), and unit column strides with row strides ≥ the row length mean
    // distinct (row, column) pairs of `dst` are distinct elements. `dst` is borrowed mutably
    // and the operands shared, so they cannot overlap.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_shape.stride as isize,
            accumulate == Accumulate::Add,
            lhs.as_ptr(),
            1,
            lhs_shape.stride as isize,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Output columns of one panel of [`Packed`] weights: the widest row block of gemm's AVX-512
/// microkernel (4 × 16), and four of its AVX2 one.
pub const PANEL: usize = 64;

/// Rows of a packed product per gemm call. Over 48 (gemm's single-thread lhs packing
/// threshold, 8 × its 6-column tile) gemm copies each panel before using it, though a panel
/// is already laid out as its microkernel reads it: a copy of every weight per pass, 15% of a
/// 129-token pass run in two bands (one medium text: 56 → 62 embeddings/s on two Zen 4
/// cores).
const UNPACKED_ROWS: usize = 48;

/// The weights of a dense layer (`inputs × outputs`, as `input · W`) packed as panels of
/// [`PANEL`] output columns, each `inputs × PANEL` row-major and contiguous, the last padded
/// with zeros. A product over a few rows then streams every weight from memory once and in
/// order (the strided reads of a plain layout left short texts waiting on memory), and
/// threads split the work by panels.
pub struct Packed {
    values: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Packed {
    /// Packs `weights`, `inputs × outputs` row-major.
    ///
    /// # Panics
    /// When `weights` does not hold `inputs × outputs` values.
    pub fn new(weights: &[f32], inputs: usize, outputs: usize) -> Packed {
        assert_eq!(weights.len(), inputs * outputs, "Packed::new: shape");
        let panels = outputs.div_ceil(PANEL);
        let mut values = vec![0.0; panels * inputs * PANEL];
        for (panel, block) in values.chunks_exact_mut(inputs * PANEL).enumerate() {
            let first = panel * PANEL;
            let width = PANEL.min(outputs - first);
            for (row, packed) in block.chunks_exact_mut(PANEL).enumerate() {
                let start = row * outputs + first;
                packed[..width].copy_from_slice(&weights[start..start + width]);
            }
        }
        Packed {
            values,
            inputs,
            outputs,
        }
    }

    /// Output columns.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
}

/// A pointer that may cross threads; [`matmul_packed`] and [`matmul_int8`] hand each thread
/// other columns.
#[derive(Clone, Copy)]
pub(super) struct SharedMut(pub(super) *mut f32);
// SAFETY: used only by `matmul_packed` and `matmul_int8`, whose tasks write disjoint columns
// (their own panels) of one buffer that outlives them (the parallel loop returns before the
// borrow ends).
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the field).
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst (rows × outputs, dense) (+)= input (rows × inputs, dense) · weights + bias`, then
/// `finish` on the result (an activation; `|_| {}` for none), the panels split across
/// `threads` threads. Each thread writes the bias into its own panels, multiplies, and runs
/// `finish` on each row of a panel while the panel is in cache: no single-threaded pass over
/// the output before or after.
///
/// # Panics
/// When a slice is shorter than its shape (a bug in the caller, never input).
pub fn matmul_packed(
    dst: &mut [f32],
    input: &[f32],
    rows: usize,
    weights: &Packed,
    bias: &[f32],
    mode: Accumulate,
    finish: impl Fn(&mut [f32]) + Sync,
    threads: usize,
) {
    let (inputs, outputs) = (weights.inputs, weights.outputs);
    assert!(dst.len() >= rows * outputs, "matmul_packed: dst too short");
    assert_eq!(bias.len(), outputs, "matmul_packed: bias");
    assert!(
        input.len() >= rows * inputs,
        "matmul_packed: input too short"
    );
    if rows == 0 || outputs == 0 || inputs == 0 {
        return;
    }
    let panels = outputs.div_ceil(PANEL);
    let target = SharedMut(dst.as_mut_ptr());
    // Row `row` of the panel starting at column `first`, `width` wide.
    let panel_row = |row: usize, first: usize, width: usize| {
        assert!(
            row < rows && first + width <= outputs,
            "matmul_packed: panel row"
        );
        // SAFETY: row < rows and first + width <= outputs (asserted), so the `width` values at
        // row · outputs + first lie inside `dst` (rows · outputs ≤ dst.len(), asserted
        // above). Each panel's columns belong to one task, which holds one such row at a
        // time, and `dst` stays borrowed until every task has returned.
        unsafe { std::slice::from_raw_parts_mut(target.get().add(row * outputs + first), width) }
    };
    for_panel_ranges(panels, threads, |range| {
        for panel in range {
            let first = panel * PANEL;
            let width = PANEL.min(outputs - first);
            let bias = &bias[first..first + width];
            for row in 0..rows {
                let out = panel_row(row, first, width);
                match mode {
                    Accumulate::Overwrite => out.copy_from_slice(bias),
                    Accumulate::Add => add(out, bias),
                }
            }
            let block = &weights.values[panel * inputs * PANEL..(panel + 1) * inputs * PANEL];
            // Rows start..start + count at a time (`UNPACKED_ROWS`).
            for start in (0..rows).step_by(UNPACKED_ROWS) {
                let count = UNPACKED_ROWS.min(rows - start);
                // SAFETY: the product writes rows start..start + count, columns first..first +
                // width of `dst` (row stride `outputs`): its last element, (start + count - 1)
                // · outputs + first + width - 1, is below rows · outputs ≤ dst.len(). Each
                // panel belongs to one group, so no two tasks write the same element, and
                // `dst` stays borrowed until every task has returned. `input` rows start..start
                // + count (of rows × inputs) and `block` (inputs × PANEL) are read within their
                // slices, checked above and by construction.
                unsafe {
                    gemm::gemm(
                        count,
                        width,
                        inputs,
                        target.get().add(start * outputs + first),
                        1,
                        outputs as isize,
                        true,
                        input.as_ptr().add(start * inputs),
                        1,
                        inputs as isize,
                        block.as_ptr(),
                        1,
                        PANEL as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        // Rayon(1), not None: see `matmul`.
                        Parallelism::Rayon(1),
                    );
                }
            }
            for row in 0..rows {
                finish(panel_row(row, first, width));
            }
        }
    });
}

/// Runs `run` over the panels `0..panels` of a product split into `threads` contiguous ranges,
/// one per thread of the rayon pool (on the calling thread when there is one range).
pub(super) fn for_panel_ranges(
    panels: usize,
    threads: usize,
    run: impl Fn(std::ops::Range<usize>) + Sync,
) {
    let groups = threads.clamp(1, panels.max(1));
    if groups == 1 {
        run(0..panels);
    } else {
        use rayon::prelude::*;
        (0..groups)
            .into_par_iter()
            .for_each(|group| run(panels * group / groups..panels * (group + 1) / groups));
    }
}

/// Whether this CPU runs the AVX2 + FMA copies of the loops (checked once).
fn has_avx2_fma() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Defines `pub fn $name(args)` that runs `$body` compiled for AVX2 + FMA when the CPU has
/// them, else for the build's baseline. The body is the same code; only what the compiler may
/// vectorise it with changes.
macro_rules! dispatched {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn fast($($arg: $ty),*) {
                body($($arg),*);
            }

            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: `fast` only differs from `body` in the instructions it may use,
                // AVX2 and FMA, and the CPU was just found to have both.
                unsafe { fast($($arg),*) };
                return;
            }
            body($($arg),*);
        }
    };
}

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so that `n · ln 2` subtracts exactly for |n| < 2^9.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// e^x for x ≤ 88 (larger inputs saturate to e^88), relative error below 2e-7; written so
/// the compiler vectorises loops over it (no branches, no calls).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor series of e^r on |r| ≤ ln2/2 to the 7th power.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    // 2^n from n + 127 (in 1..=254 after the clamp) as an exponent field. Adding 2^23 puts
    // that integer in the low mantissa bits, read with a mask: `n as i32` is a saturating
    // conversion, which LLVM does not vectorise (the loops ran at scalar speed with it).
    let biased = (n + (8_388_608.0 + 127.0)).to_bits() & 0xff;
    let scale = f32::from_bits(biased << 23);
    p * scale
}

/// erf(x) as a rational function of x (odd degree 13 over even degree 8) on [-4, 4], ±1
/// beyond; absolute error below 1e-6. The coefficients are the well-known minimax fit used by
/// Eigen and XNNPACK for single precision.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024_1e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906e-4;
    p = p * x2 - 2.954_600_2e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329_2e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

dispatched! {
    /// GELU with the exact erf, in place: `x · (1 + erf(x / √2)) / 2`.
    fn gelu_erf(values: &mut [f32]) {
        for value in values.iter_mut() {
            let x = *value;
            *value = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

dispatched! {
    /// GELU with the tanh approximation, in place.
    fn gelu_tanh(values: &mut [f32]) {
        const C: f32 = 0.797_884_6; // √(2/π)
        for value in values.iter_mut() {
            let x = *value;
            let inner = C * (x + 0.044_715 * x * x * x);
            // tanh(u) = 1 - 2 / (e^{2u} + 1)
            let tanh = 1.0 - 2.0 / (exp(2.0 * inner) + 1.0);
            *value = 0.5 * x * (1.0 + tanh);
        }
    }
}

dispatched! {
    /// ReLU in place.
    fn relu(values: &mut [f32]) {
        for value in values.iter_mut() {
            *value = value.max(0.0);
        }
    }
}

/// Lanes of the reductions below: independent partial sums (or maxima) the compiler keeps in
/// one vector register, since a single running total would serialise on its own result.
const LANES: usize = 16;

#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, value) in lanes.iter_mut().zip(chunk) {
            *lane += value;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[inline(always)]
fn squared_deviation(values: &[f32], mean: f32) -> f32 {
    let mut lanes = [0.0_f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, value) in lanes.iter_mut().zip(chunk) {
            *lane += (value - mean) * (value - mean);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// The largest of `values` (−∞ when empty). Not a `dispatched!` loop: LLVM does not vectorise
/// a compare-and-select reduction (measured: 0.37 ns a value, scalar speed), so x86 gets one
/// written with AVX2 intrinsics.
#[inline(always)]
fn max(values: &[f32]) -> f32 {
    let mut range = [f32::INFINITY, f32::NEG_INFINITY];
    extremes(values, &mut range, false);
    range[1]
}

/// The smallest and largest of `values` into `range` (±∞ when empty): the range an INT8
/// product's input row is quantised over.
pub fn min_max(values: &[f32], range: &mut [f32; 2]) {
    extremes(values, range, true);
}

/// `range[1]` = the largest of `values`, and `range[0]` the smallest when `low` is set.
#[inline(always)]
fn extremes(values: &[f32], range: &mut [f32; 2], low: bool) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 (checked just above).
        *range = unsafe { x86::extremes(values, low) };
        return;
    }
    range[0] = if low {
        values.iter().copied().fold(f32::INFINITY, f32::min)
    } else {
        f32::INFINITY
    };
    range[1] = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
}

dispatched! {
    /// Softmax of each row of `values` (`width` values a row), in place.
    fn softmax_rows(values: &mut [f32], width: usize) {
        for row in values.chunks_exact_mut(width.max(1)) {
            let max = max(row);
            for value in row.iter_mut() {
                *value = exp(*value - max);
            }
            let inverse = 1.0 / sum(row);
            for value in row.iter_mut() {
                *value *= inverse;
            }
        }
    }
}

dispatched! {
    /// Layer norm of each row of `values` (`weight.len()` values a row), in place, with
    /// `weight` and `bias`.
    fn layer_norm_rows(values: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
        let width = weight.len().max(1);
        let n = width as f32;
        for row in values.chunks_exact_mut(width) {
            let mean = sum(row) / n;
            let variance = squared_deviation(row, mean) / n;
            let inverse = 1.0 / (variance + eps).sqrt();
            for ((value, w), b) in row.iter_mut().zip(weight).zip(bias) {
                *value = (*value - mean) * inverse * w + b;
            }
        }
    }
}

dispatched! {
    /// `dst += src`, element by element.
    fn add(dst: &mut [f32], src: &[f32]) {
        for (value, add) in dst.iter_mut().zip(src) {
            *value += add;
        }
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; LANES];
    let mut left = a.chunks_exact(LANES);
    let mut right = b.chunks_exact(LANES);
    for (x, y) in (&mut left).zip(&mut right) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    let tail: f32 = left
        .remainder()
        .iter()
        .zip(right.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// Attention of one head over one short text, without gemm (whose fixed cost per call
/// outweighs products this small): `out (queries × head) = softmax(q · kᵀ · scale) · v` over
/// `keys` keys, where row `t` of q, k and v starts at `t * stride` of its slice. `scores`
/// holds at least `queries × keys` values.
///
/// Heads of 32 or 64 values over at most 32 tokens (MiniLM, BERT-base and nomic-embed on short
/// texts) take an AVX2 kernel that keeps a query's scores and its output row in registers:
/// the loops below, at run-time lengths of 12 keys and 32 values, were left scalar by LLVM
/// (16% of a short INT8 batch).
#[allow(
    clippy::too_many_arguments,
    reason = "the three operands, their layout and scale"
)]
pub fn attention_direct(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    head: usize,
    keys: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        /// One instance of `x86::attention_small`.
        type Kernel = unsafe fn(&[f32], &[f32], &[f32], usize, usize, f32, &mut [f32]);
        let kernel: Option<Kernel> = match (head, keys.div_ceil(8)) {
            (32, 1) => Some(x86::attention_small::<32, 8>),
            (32, 2) => Some(x86::attention_small::<32, 16>),
            (32, 3) => Some(x86::attention_small::<32, 24>),
            (32, 4) => Some(x86::attention_small::<32, 32>),
            (64, 1) => Some(x86::attention_small::<64, 8>),
            (64, 2) => Some(x86::attention_small::<64, 16>),
            (64, 3) => Some(x86::attention_small::<64, 24>),
            (64, 4) => Some(x86::attention_small::<64, 32>),
            _ => None,
        };
        if let Some(kernel) = kernel {
            // SAFETY: the CPU has AVX2 and FMA (checked above), and the instance's H is `head`
            // and its K at least `keys` (matched above); it slices q, k and v with bounds
            // checks.
            unsafe { kernel(q, k, v, stride, keys, scale, out) };
            return;
        }
    }
    attention_direct_portable(q, k, v, stride, head, keys, scale, scores, out);
}

dispatched! {
    /// [`attention_direct`] for any head size and length, in plain Rust.
    fn attention_direct_portable(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        stride: usize,
        head: usize,
        keys: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32]
    ) {
        let (queries, len) = (out.len() / head.max(1), keys);
        let scores = &mut scores[..queries * len];
        for (t, row) in scores.chunks_exact_mut(len.max(1)).enumerate() {
            let query = &q[t * stride..t * stride + head];
            for (s, score) in row.iter_mut().enumerate() {
                *score = dot(query, &k[s * stride..s * stride + head]) * scale;
            }
        }
        for row in scores.chunks_exact_mut(len.max(1)) {
            let max = max(row);
            for value in row.iter_mut() {
                *value = exp(*value - max);
            }
            let inverse = 1.0 / sum(row);
            for value in row.iter_mut() {
                *value *= inverse;
            }
        }
        out.fill(0.0);
        for (row, weights) in out.chunks_exact_mut(head.max(1)).zip(scores.chunks_exact(len.max(1))) {
            for (s, &weight) in weights.iter().enumerate() {
                for (o, x) in row.iter_mut().zip(&v[s * stride..s * stride + head]) {
                    *o += weight * x;
                }
            }
        }
    }
}

dispatched! {
    /// `up[i] *= silu(gate[i])`: SwiGLU's gating, `silu(g) = g / (1 + e^-g)`.
    fn silu_mul(gate: &[f32], up: &mut [f32]) {
        for (u, &g) in up.iter_mut().zip(gate) {
            *u *= g / (1.0 + exp(-g));
        }
    }
}

dispatched! {
    /// Rotary positions on consecutive heads of `head` values (GPT-NeoX layout): value `i`
    /// of a head's first half and value `i` of its second half rotate by the angle whose
    /// cosine and sine are `cos[i]` and `sin[i]`.
    fn rotate_halves(values: &mut [f32], head: usize, cos: &[f32], sin: &[f32]) {
        let half = head / 2;
        for block in values.chunks_exact_mut(head.max(1)) {
            let (first, second) = block.split_at_mut(half);
            for (((a, b), &c), &s) in first.iter_mut().zip(second.iter_mut()).zip(cos).zip(sin) {
                let (x, y) = (*a, *b);
                *a = x * c - y * s;
                *b = y * c + x * s;
            }
        }
    }
}

/// `out = clamp(round(value · inverse + zero), 0, 255)` for each value (ties to even): one row
/// of activations quantised to `u8` (out may be longer; the rest is left as it is).
pub fn quantize_u8(values: &[f32], inverse: f32, zero: f32, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { x86::quantize_u8(values, inverse, zero, out) };
        return;
    }
    quantize_u8_portable(values, inverse, zero, out);
}

dispatched! {
    /// [`quantize_u8`] in plain Rust: any CPU, and the tail of the AVX2 version.
    fn quantize_u8_portable(values: &[f32], inverse: f32, zero: f32, out: &mut [u8]) {
        // Adding 2^23 to a value in 0..=255 leaves it, rounded to the nearest integer (ties
        // to even), in the low bits of the sum's mantissa: a rounding and conversion made of
        // one add and a mask, which vectorise where `round` is a libm call and `as` a
        // saturating scalar conversion.
        const ROUNDER: f32 = 8_388_608.0;
        for (q, &value) in out.iter_mut().zip(values) {
            let level = (value * inverse + zero).clamp(0.0, 255.0) + ROUNDER;
            *q = (level.to_bits() & 0xff) as u8;
        }
    }
}

dispatched! {
    /// `out[c] (+)= bias[c] + scale · scales[c] · (sums[c] − zero · column_sums[c])`: integer
    /// sums of an INT8 product back to f32, with the layer's bias, overwriting `out` or added
    /// to it (a residual).
    fn dequantize(
        out: &mut [f32],
        sums: &[i32],
        scales: &[f32],
        column_sums: &[i32],
        bias: &[f32],
        scale: f32,
        zero: i32,
        mode: Accumulate
    ) {
        let values = sums.iter().zip(scales).zip(column_sums).zip(bias).map(
            |(((&sum, &column_scale), &column_sum), &bias)| {
                bias + scale * column_scale * (sum - zero * column_sum) as f32
            },
        );
        match mode {
            Accumulate::Overwrite => {
                for (value, new) in out.iter_mut().zip(values) {
                    *value = new;
                }
            }
            Accumulate::Add => {
                for (value, new) in out.iter_mut().zip(values) {
                    *value += new;
                }
            }
        }
    }
}

/// The reductions and conversions LLVM leaves scalar, written with AVX2 intrinsics.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, __m256i, _mm256_add_epi32, _mm256_add_ps, _mm256_and_ps, _mm256_castps256_ps128,
        _mm256_castsi256_ps, _mm256_castsi256_si128, _mm256_cmp_ps, _mm256_cvtps_epi32,
        _mm256_extractf128_ps, _mm256_extracti128_si256, _mm256_floor_ps, _mm256_fmadd_ps,
        _mm256_fnmadd_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_min_ps, _mm256_mul_ps,
        _mm256_packs_epi32, _mm256_packus_epi16, _mm256_permutevar8x32_epi32, _mm256_set1_epi32,
        _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_slli_epi32, _mm256_storeu_ps,
        _mm256_sub_ps, _mm_add_ps, _mm_cvtss_f32, _mm_max_ps, _mm_movehl_ps, _mm_shuffle_ps,
        _mm_storeu_si128, _CMP_EQ_OQ,
    };

    use super::{LN2_HI, LN2_LO, LOG2_E};

    /// Loads 8 values from `values[at..at + 8]`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and `at + 8 <= values.len()`.
    #[inline(always)]
    unsafe fn load(values: &[f32], at: usize) -> __m256 {
        debug_assert!(at + 8 <= values.len());
        // SAFETY: the caller keeps the 8 values inside the slice; loadu reads unaligned.
        unsafe { _mm256_loadu_ps(values.as_ptr().add(at)) }
    }

    fn lanes(register: __m256) -> [f32; 8] {
        let mut out = [0.0_f32; 8];
        // SAFETY: `out` holds the 8 values storeu writes, at any alignment.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), register) };
        out
    }

    /// `[min, max]` of `values` (the min left at +∞ unless `low`), 16 values a step in two
    /// pairs of registers. `_mm256_min_ps(x, acc)` returns `acc` when `x` is NaN: NaNs are
    /// skipped, as `f32::min` does.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn extremes(values: &[f32], low: bool) -> [f32; 2] {
        let mut smallest = [_mm256_set1_ps(f32::INFINITY); 2];
        let mut largest = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
        let whole = values.len() / 16 * 16;
        for at in (0..whole).step_by(16) {
            // SAFETY: at + 16 <= whole <= values.len().
            let (a, b) = unsafe { (load(values, at), load(values, at + 8)) };
            largest[0] = _mm256_max_ps(a, largest[0]);
            largest[1] = _mm256_max_ps(b, largest[1]);
            if low {
                smallest[0] = _mm256_min_ps(a, smallest[0]);
                smallest[1] = _mm256_min_ps(b, smallest[1]);
            }
        }
        let tail = &values[whole..];
        let high = lanes(_mm256_max_ps(largest[0], largest[1]))
            .into_iter()
            .chain(tail.iter().copied())
            .fold(f32::NEG_INFINITY, f32::max);
        let low = if low {
            lanes(_mm256_min_ps(smallest[0], smallest[1]))
                .into_iter()
                .chain(tail.iter().copied())
                .fold(f32::INFINITY, f32::min)
        } else {
            f32::INFINITY
        };
        [low, high]
    }

    /// [`super::quantize_u8`], 32 values a step: multiply-add, clamp to 0..=255, convert
    /// (rounding to nearest even, the default MXCSR mode), pack to bytes with saturation,
    /// and put the four 128-bit lanes' bytes back in order.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_u8(values: &[f32], inverse: f32, zero: f32, out: &mut [u8]) {
        let count = values.len().min(out.len());
        let whole = count / 32 * 32;
        let (scale, offset) = (_mm256_set1_ps(inverse), _mm256_set1_ps(zero));
        let (floor, ceiling) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
        // packs/packus interleave their inputs per 128-bit lane: dwords 0, 4, 1, 5, ... hold
        // the 32 bytes in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let level = |v: __m256| -> __m256i {
            // A multiply and an add, as the portable loop rounds them (no fused rounding).
            let scaled = _mm256_add_ps(_mm256_mul_ps(v, scale), offset);
            _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(scaled, floor), ceiling))
        };
        for at in (0..whole).step_by(32) {
            // SAFETY: at + 32 <= whole <= values.len().
            let (a, b, c, d) = unsafe {
                (
                    load(values, at),
                    load(values, at + 8),
                    load(values, at + 16),
                    load(values, at + 24),
                )
            };
            let words = (
                _mm256_packs_epi32(level(a), level(b)),
                _mm256_packs_epi32(level(c), level(d)),
            );
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(words.0, words.1), order);
            let mut packed = [0_u8; 32];
            // SAFETY: `packed` holds the 32 bytes two 16-byte stores write.
            unsafe {
                _mm_storeu_si128(packed.as_mut_ptr().cast(), _mm256_castsi256_si128(bytes));
                _mm_storeu_si128(
                    packed.as_mut_ptr().add(16).cast(),
                    _mm256_extracti128_si256::<1>(bytes),
                );
            }
            out[at..at + 32].copy_from_slice(&packed);
        }
        super::quantize_u8_portable(&values[whole..count], inverse, zero, &mut out[whole..count]);
    }

    /// Stores 8 values at `values[at..at + 8]`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and `at + 8 <= values.len()`.
    #[inline(always)]
    unsafe fn store(values: &mut [f32], at: usize, register: __m256) {
        debug_assert!(at + 8 <= values.len());
        // SAFETY: the caller keeps the 8 values inside the slice; storeu writes unaligned.
        unsafe { _mm256_storeu_ps(values.as_mut_ptr().add(at), register) }
    }

    /// [`super::exp`] on 8 lanes: the same range reduction and polynomial.
    #[target_feature(enable = "avx2,fma")]
    fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
            _mm256_set1_ps(88.0),
        );
        let n = _mm256_floor_ps(_mm256_fmadd_ps(
            x,
            _mm256_set1_ps(LOG2_E),
            _mm256_set1_ps(0.5),
        ));
        let r = _mm256_fnmadd_ps(
            n,
            _mm256_set1_ps(LN2_LO),
            _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x),
        );
        let mut p = _mm256_set1_ps(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        // 2^n: n + 127 (1..=254 after the clamp) shifted into the exponent field.
        let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased)))
    }

    /// The largest of the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn largest(x: __m256) -> f32 {
        let four = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
        let two = _mm_max_ps(four, _mm_movehl_ps(four, four));
        _mm_cvtss_f32(_mm_max_ps(two, _mm_shuffle_ps::<0b01>(two, two)))
    }

    /// The sum of the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn total(x: __m256) -> f32 {
        let four = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        _mm_cvtss_f32(_mm_add_ps(two, _mm_shuffle_ps::<0b01>(two, two)))
    }

    /// [`super::attention_direct`] for heads of `H` values (a multiple of 8, at most 64), one
    /// output row per query, over `len` keys, at most `K` (a multiple of 8, at most 32), in
    /// `K / 8` registers: the keys are transposed and scaled once, a query's scores are `H`
    /// broadcast multiply-adds into `K / 8` registers (padding keys masked to −∞, then
    /// exactly 0 after the exponential), and its output row is accumulated in `H / 8`
    /// registers.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA. (Shapes are checked: a token count over `K` or an
    /// operand too short for its rows panics.)
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn attention_small<const H: usize, const K: usize>(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        stride: usize,
        len: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        assert!(len <= K && K <= 32 && H <= 64 && H.is_multiple_of(8) && K.is_multiple_of(8));
        let mut keys = [[0.0_f32; K]; H];
        for s in 0..len {
            for (d, &value) in k[s * stride..s * stride + H].iter().enumerate() {
                keys[d][s] = value * scale;
            }
        }
        let mut padding = [0.0_f32; 32];
        padding[len..K].fill(f32::NEG_INFINITY);
        let mut masks = [_mm256_setzero_ps(); 4];
        let mut valid = [_mm256_setzero_ps(); 4];
        for b in 0..K / 8 {
            // SAFETY: 8 · b + 8 ≤ K ≤ 32 = padding.len().
            masks[b] = unsafe { load(&padding, 8 * b) };
            valid[b] = _mm256_cmp_ps::<_CMP_EQ_OQ>(masks[b], _mm256_setzero_ps());
        }
        let mut weights = [0.0_f32; 32];
        for (t, row) in out.chunks_exact_mut(H).enumerate() {
            let query = &q[t * stride..t * stride + H];
            let mut scores = masks;
            for (&value, keys) in query.iter().zip(&keys) {
                let w = _mm256_set1_ps(value);
                for (b, score) in scores.iter_mut().enumerate().take(K / 8) {
                    // SAFETY: 8 · b + 8 ≤ K = keys.len().
                    *score = _mm256_fmadd_ps(w, unsafe { load(keys, 8 * b) }, *score);
                }
            }
            let mut high = scores[0];
            for score in &scores[1..K / 8] {
                high = _mm256_max_ps(high, *score);
            }
            let high = _mm256_set1_ps(largest(high));
            let mut sum = _mm256_setzero_ps();
            for (score, valid) in scores.iter_mut().zip(&valid).take(K / 8) {
                *score = _mm256_and_ps(exp(_mm256_sub_ps(*score, high)), *valid);
                sum = _mm256_add_ps(sum, *score);
            }
            let inverse = _mm256_set1_ps(1.0 / total(sum));
            for (b, score) in scores.iter().enumerate().take(K / 8) {
                // SAFETY: 8 · b + 8 ≤ K ≤ 32 = weights.len().
                unsafe { store(&mut weights, 8 * b, _mm256_mul_ps(*score, inverse)) };
            }
            let mut sums = [_mm256_setzero_ps(); 8];
            for (s, &weight) in weights[..len].iter().enumerate() {
                let w = _mm256_set1_ps(weight);
                let values = &v[s * stride..s * stride + H];
                for (c, sum) in sums.iter_mut().enumerate().take(H / 8) {
                    // SAFETY: 8 · c + 8 ≤ H = values.len().
                    *sum = _mm256_fmadd_ps(w, unsafe { load(values, 8 * c) }, *sum);
                }
            }
            for (c, sum) in sums.iter().enumerate().take(H / 8) {
                // SAFETY: 8 · c + 8 ≤ H = row.len().
                unsafe { store(row, 8 * c, *sum) };
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp, reason = "exact results of exact inputs")]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64 (converges well for |x| ≤ 4 with enough terms).
    fn erf_reference(x: f64) -> f64 {
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / f64::from(n);
            sum += term / f64::from(2 * n + 1);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_1e6_of_the_series() {
        let mut worst = 0.0_f64;
        for step in -5000..=5000 {
            let x = f64::from(step) / 1000.0;
            let reference = if x.abs() > 4.5 {
                x.signum()
            } else {
                erf_reference(x)
            };
            worst = worst.max((f64::from(erf(x as f32)) - reference).abs());
        }
        assert!(worst < 1e-6, "worst error {worst}");
    }

    #[test]
    fn exp_is_within_2e7_relative() {
        let mut worst = 0.0_f64;
        for step in -8700..=8800 {
            let x = f64::from(step) / 100.0;
            let ours = f64::from(exp(x as f32));
            let reference = (f64::from(x as f32)).exp();
            worst = worst.max(((ours - reference) / reference).abs());
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(f32::NEG_INFINITY) >= 0.0);
    }

    #[test]
    fn quantisation_and_extremes_agree_with_their_portable_forms() {
        let mut rng = fastrand::Rng::with_seed(7);
        for len in [0, 1, 7, 8, 15, 16, 31, 32, 33, 100, 384, 1536] {
            // Values past both ends of 0..=255 once scaled, and exact ties (k + 0.5).
            let values: Vec<f32> = (0..len)
                .map(|i| match i % 5 {
                    0 => (rng.f32() - 0.5) * 600.0,
                    // Ties once scaled: 2 · value + 128 = k + 0.5.
                    1 => (rng.u32(0..255) as f32 + 0.5) * 0.5 - 64.0,
                    _ => rng.f32() * 2.0 - 1.0,
                })
                .collect();
            let (inverse, zero) = (2.0, 128.0);
            let mut fast = vec![7_u8; len + 3];
            let mut slow = vec![7_u8; len + 3];
            quantize_u8(&values, inverse, zero, &mut fast);
            quantize_u8_portable(&values, inverse, zero, &mut slow);
            assert_eq!(fast, slow, "{len} values");
            let mut range = [0.0; 2];
            min_max(&values, &mut range);
            let low = values.iter().copied().fold(f32::INFINITY, f32::min);
            let high = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(range, [low, high], "{len} values");
            assert_eq!(max(&values), high, "{len} values");
        }
        let mut range = [0.0; 2];
        min_max(&[f32::NAN, -3.0, f32::NAN, 2.0], &mut range);
        assert_eq!(range, [-3.0, 2.0], "NaN is skipped");
    }

    #[test]
    fn direct_attention_matches_its_definition() {
        let mut rng = fastrand::Rng::with_seed(11);
        for (len, head) in [
            (1_usize, 8_usize),
            (1, 32),
            (5, 32),
            (8, 32),
            (12, 32),
            (17, 64),
            (24, 64),
            (25, 32),
            (32, 32),
            (31, 16),
            (9, 40),
        ] {
            let stride = 3 * head + 5; // q, k, v side by side and a gap, as in a qkv row
            let qkv: Vec<f32> = (0..len * stride).map(|_| rng.f32() * 4.0 - 2.0).collect();
            let scale = 0.3;
            // Every token's query, and the queries of each half (a band of tokens) over all
            // the keys.
            for queries in [0..len, 0..len.div_ceil(2), len / 2..len] {
                let count = queries.len();
                let mut scratch = vec![f32::NAN; count * len];
                let mut out = vec![f32::NAN; count * head];
                attention_direct(
                    &qkv[queries.start * stride..],
                    &qkv[head..],
                    &qkv[2 * head..],
                    stride,
                    head,
                    len,
                    scale,
                    &mut scratch,
                    &mut out,
                );
                let at =
                    |t: usize, part: usize, d: usize| f64::from(qkv[t * stride + part * head + d]);
                for (row, t) in queries.clone().enumerate() {
                    let scores: Vec<f64> = (0..len)
                        .map(|s| (0..head).map(|d| at(t, 0, d) * at(s, 1, d)).sum::<f64>() * 0.3)
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for d in 0..head {
                        let expected: f64 =
                            (0..len).map(|s| weights[s] / total * at(s, 2, d)).sum();
                        let got = f64::from(out[row * head + d]);
                        assert!(
                            (got - expected).abs() < 1e-5,
                            "len {len}, head {head}, queries {queries:?}: ({t}, {d}) {got} \
                             against {expected}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn softmax_and_layer_norm_match_their_definitions() {
        let mut rows = vec![1.0, 2.0, 3.0, -1.0, 0.0, 1000.0];
        softmax_rows(&mut rows, 3);
        let e = [1.0_f32.exp(), 2.0_f32.exp(), 3.0_f32.exp()];
        let sum: f32 = e.iter().sum();
        for (ours, reference) in rows[..3].iter().zip(e.iter().map(|v| v / sum)) {
            assert!((ours - reference).abs() < 1e-6);
        }
        assert!((rows[5] - 1.0).abs() < 1e-6 && rows[3] < 1e-30);

        let mut rows = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm_rows(&mut rows, &[1.0, 2.0], &[0.0, 1.0], 0.0);
        assert_eq!(rows, vec![-1.0, 3.0, -1.0, 3.0]);
    }

    #[test]
    fn matmul_handles_strides_layouts_and_accumulation() {
        // lhs 2×3 inside a stride-4 buffer; rhs 3×2 row-major and as a transposed 2×3.
        let lhs = [1.0, 2.0, 3.0, 99.0, 4.0, 5.0, 6.0, 99.0];
        let rhs = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let rhs_t = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
        let expected = [4.0, 5.0, 10.0, 11.0];
        let lhs_shape = Shape {
            rows: 2,
            cols: 3,
            stride: 4,
        };
        for (rhs, layout, stride) in [(&rhs, Rhs::RowMajor, 2), (&rhs_t, Rhs::Transposed, 3)] {
            let mut dst = [0.0; 4];
            let shape = Shape::dense(2, 2);
            matmul(
                &mut dst,
                shape,
                &lhs,
                lhs_shape,
                rhs,
                stride,
                layout,
                1.0,
                Accumulate::Overwrite,
                1,
            );
            assert_eq!(dst, expected);
            matmul(
                &mut dst,
                shape,
                &lhs,
                lhs_shape,
                rhs,
                stride,
                layout,
                0.5,
                Accumulate::Add,
                2,
            );
            assert_eq!(dst, expected.map(|v| v * 1.5));
        }
    }

    #[test]
    fn packed_products_add_the_bias_and_finish_each_panel() {
        let mut rng = fastrand::Rng::with_seed(5);
        // 130 outputs: two whole panels and part of a third.
        let (rows, inputs, outputs) = (7, 20, 130);
        let w: Vec<f32> = (0..inputs * outputs).map(|_| rng.f32() - 0.5).collect();
        let x: Vec<f32> = (0..rows * inputs).map(|_| rng.f32() - 0.5).collect();
        let bias: Vec<f32> = (0..outputs).map(|_| rng.f32() - 0.5).collect();
        let packed = Packed::new(&w, inputs, outputs);
        let product = |r: usize, c: usize| -> f32 {
            (0..inputs)
                .map(|k| x[r * inputs + k] * w[k * outputs + c])
                .sum()
        };
        for threads in [1, 2, 3] {
            let mut out = vec![f32::NAN; rows * outputs];
            let clamp = |row: &mut [f32]| row.iter_mut().for_each(|v| *v = v.max(0.0));
            matmul_packed(
                &mut out,
                &x,
                rows,
                &packed,
                &bias,
                Accumulate::Overwrite,
                clamp,
                threads,
            );
            let mut added = vec![1.0; rows * outputs];
            matmul_packed(
                &mut added,
                &x,
                rows,
                &packed,
                &bias,
                Accumulate::Add,
                |_| {},
                threads,
            );
            for r in 0..rows {
                for c in 0..outputs {
                    let expected = bias[c] + product(r, c);
                    let (got, sum) = (out[r * outputs + c], added[r * outputs + c]);
                    assert!((got - expected.max(0.0)).abs() < 1e-5, "({r}, {c}): {got}");
                    assert!((sum - 1.0 - expected).abs() < 1e-5, "({r}, {c}): {sum}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "lhs too short")]
    fn matmul_refuses_a_view_past_its_slice() {
        let mut dst = [0.0; 4];
        matmul(
            &mut dst,
            Shape::dense(2, 2),
            &[1.0; 5],
            Shape::dense(2, 3),
            &[1.0; 6],
            2,
            Rhs::RowMajor,
            1.0,
            Accumulate::Overwrite,
            1,
        );
    }

    #[test]
    fn gelu_matches_the_exact_form() {
        let mut values: Vec<f32> = (-60..=60).map(|v| v as f32 / 10.0).collect();
        let inputs = values.clone();
        gelu_erf(&mut values);
        for (x, y) in inputs.iter().zip(&values) {
            let reference =
                0.5 * f64::from(*x) * (1.0 + erf_reference(f64::from(*x) / 2f64.sqrt()));
            assert!(
                (f64::from(*y) - reference).abs() < 1e-5,
                "gelu({x}) = {y}, want {reference}"
            );
        }
    }
}
