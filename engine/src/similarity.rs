//! Cosine similarity: the one dot-product kernel the graph, the exact scan, the index's queue
//! and the rescoring of index results share.

use std::sync::LazyLock;

use pulp::{Arch, Simd, WithSimd};

/// The widest SIMD level this CPU has (AVX-512, AVX2 + FMA, ...), detected once. The build's
/// baseline is SSE2; each kernel is compiled for every level and `pulp` calls the best.
///
/// Written first with plain loops over 16-lane arrays (compiled per level by `multiversion`):
/// the products vectorised, but the closing sum of the lanes came out as some sixty scalar
/// shuffles and adds, more than the products themselves, and the multiply and add were not
/// fused. `pulp`'s vector types say exactly which instructions are meant.
static ARCH: LazyLock<Arch> = LazyLock::new(Arch::new);

/// Independent accumulators, so consecutive fused multiply-adds do not wait for each other.
const ACCUMULATORS: usize = 4;

/// `a · b` over their common length.
struct Dot<'a> {
    a: &'a [f32],
    b: &'a [f32],
}

impl WithSimd for Dot<'_> {
    type Output = f32;

    #[inline]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let len = self.a.len().min(self.b.len());
        let (a, a_tail) = S::as_simd_f32s(&self.a[..len]);
        let (b, b_tail) = S::as_simd_f32s(&self.b[..len]);
        let (a_blocks, a_rest) = a.as_chunks::<ACCUMULATORS>();
        let (b_blocks, b_rest) = b.as_chunks::<ACCUMULATORS>();
        let mut sums = [simd.splat_f32s(0.0); ACCUMULATORS];
        for (x, y) in a_blocks.iter().zip(b_blocks) {
            for ((sum, x), y) in sums.iter_mut().zip(x).zip(y) {
                *sum = simd.mul_add_e_f32s(*x, *y, *sum);
            }
        }
        for (x, y) in a_rest.iter().zip(b_rest) {
            sums[0] = simd.mul_add_e_f32s(*x, *y, sums[0]);
        }
        let sum = simd.add_f32s(
            simd.add_f32s(sums[0], sums[1]),
            simd.add_f32s(sums[2], sums[3]),
        );
        let mut total = simd.reduce_sum_f32s(sum);
        for (x, y) in a_tail.iter().zip(b_tail) {
            total += x * y;
        }
        total
    }
}

/// `(query · values, values · values)` in one pass over their common length.
struct DotAndNorm<'a> {
    query: &'a [f32],
    values: &'a [f32],
}

impl WithSimd for DotAndNorm<'_> {
    type Output = (f32, f32);

    #[inline]
    fn with_simd<S: Simd>(self, simd: S) -> (f32, f32) {
        let len = self.query.len().min(self.values.len());
        let (q, q_tail) = S::as_simd_f32s(&self.query[..len]);
        let (v, v_tail) = S::as_simd_f32s(&self.values[..len]);
        let (q_blocks, q_rest) = q.as_chunks::<2>();
        let (v_blocks, v_rest) = v.as_chunks::<2>();
        let zero = simd.splat_f32s(0.0);
        let (mut dots, mut norms) = ([zero; 2], [zero; 2]);
        for (q, v) in q_blocks.iter().zip(v_blocks) {
            for lane in 0..2 {
                dots[lane] = simd.mul_add_e_f32s(q[lane], v[lane], dots[lane]);
                norms[lane] = simd.mul_add_e_f32s(v[lane], v[lane], norms[lane]);
            }
        }
        for (q, v) in q_rest.iter().zip(v_rest) {
            dots[0] = simd.mul_add_e_f32s(*q, *v, dots[0]);
            norms[0] = simd.mul_add_e_f32s(*v, *v, norms[0]);
        }
        let mut dot = simd.reduce_sum_f32s(simd.add_f32s(dots[0], dots[1]));
        let mut norm = simd.reduce_sum_f32s(simd.add_f32s(norms[0], norms[1]));
        for (x, y) in q_tail.iter().zip(v_tail) {
            dot += x * y;
            norm += y * y;
        }
        (dot, norm)
    }
}

/// `(query · values, values · values)` in one pass.
fn dot_and_norm(query: &[f32], values: &[f32]) -> (f32, f32) {
    ARCH.dispatch(DotAndNorm { query, values })
}

/// `a · b`.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    ARCH.dispatch(Dot { a, b })
}

/// Cosine similarity of a unit-length `query` with `values`.
pub(crate) fn cosine(unit_query: &[f32], values: &[f32]) -> f32 {
    let (dot, norm) = dot_and_norm(unit_query, values);
    if norm > 0.0 {
        (dot / norm.sqrt()).clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// The query scaled to unit length; `None` for a zero vector (it is similar to nothing).
pub(crate) fn unit(query: &[f32]) -> Option<Vec<f32>> {
    let norm = query.iter().map(|value| value * value).sum::<f32>().sqrt();
    (norm > 0.0 && norm.is_finite()).then(|| query.iter().map(|value| value / norm).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_is_the_normalised_dot_product() {
        let query = unit(&[3.0, 4.0]).unwrap();
        assert!((cosine(&query, &[3.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!((cosine(&query, &[-3.0, -4.0]) + 1.0).abs() < 1e-6);
        assert!(cosine(&query, &[4.0, -3.0]).abs() < 1e-6);
        assert!(cosine(&query, &[0.0, 0.0]).abs() < f32::EPSILON);
        assert!(unit(&[0.0, 0.0]).is_none());
        for len in [19_u8, 64, 200, 255] {
            let long: Vec<f32> = (0..len).map(|v| f32::from(v) / 100.0).collect();
            let (dot_of, norm) = dot_and_norm(&long, &long);
            let expected: f32 = long.iter().map(|v| v * v).sum();
            let close = |value: f32| (value - expected).abs() <= expected * 1e-5;
            assert!(
                close(dot_of) && close(norm) && close(dot(&long, &long)),
                "{len}"
            );
        }
    }
}
