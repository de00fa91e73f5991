//! Cosine similarity: the one dot-product kernel the exact scan, the index's queue and the
//! rescoring of index results share.

/// Lanes of one accumulator: an AVX-512 register.
const LANES: usize = 16;
/// Independent accumulators, so consecutive additions do not wait for each other.
const ACCUMULATORS: usize = 4;
const BLOCK: usize = LANES * ACCUMULATORS;

/// The sum of 16 lanes as a tree (four dependent steps instead of fifteen).
#[inline]
fn reduce(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for lane in 0..width {
            lanes[lane] += lanes[lane + width];
        }
    }
    lanes[0]
}

/// Lane-wise sum of four accumulators, then their tree sum.
#[inline]
fn total(parts: [[f32; LANES]; ACCUMULATORS]) -> f32 {
    let mut sum = [0.0_f32; LANES];
    for (lane, slot) in sum.iter_mut().enumerate() {
        *slot = (parts[0][lane] + parts[1][lane]) + (parts[2][lane] + parts[3][lane]);
    }
    reduce(sum)
}

/// `(query · v, v · v)` in one pass, in four 16-lane accumulators so the compiler vectorises it
/// and the additions overlap; compiled also for AVX-512 and for AVX2 + FMA and chosen at run
/// time (`multiversion`), since the build's baseline is SSE2.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma"))]
fn dot_and_norm(query: &[f32], values: &[f32]) -> (f32, f32) {
    let len = query.len().min(values.len());
    let (query, values) = (&query[..len], &values[..len]);
    let (mut d0, mut d1, mut d2, mut d3) =
        ([0.0_f32; LANES], [0.0; LANES], [0.0; LANES], [0.0; LANES]);
    let (mut n0, mut n1, mut n2, mut n3) =
        ([0.0_f32; LANES], [0.0; LANES], [0.0; LANES], [0.0; LANES]);
    for (q, v) in query.chunks_exact(BLOCK).zip(values.chunks_exact(BLOCK)) {
        let (Ok(q), Ok(v)) = (<&[f32; BLOCK]>::try_from(q), <&[f32; BLOCK]>::try_from(v)) else {
            continue;
        };
        for lane in 0..LANES {
            d0[lane] += q[lane] * v[lane];
            d1[lane] += q[LANES + lane] * v[LANES + lane];
            d2[lane] += q[2 * LANES + lane] * v[2 * LANES + lane];
            d3[lane] += q[3 * LANES + lane] * v[3 * LANES + lane];
            n0[lane] += v[lane] * v[lane];
            n1[lane] += v[LANES + lane] * v[LANES + lane];
            n2[lane] += v[2 * LANES + lane] * v[2 * LANES + lane];
            n3[lane] += v[3 * LANES + lane] * v[3 * LANES + lane];
        }
    }
    let done = len - len % BLOCK;
    let (mut dot_sum, mut norm_sum) = (total([d0, d1, d2, d3]), total([n0, n1, n2, n3]));
    for (x, y) in query[done..].iter().zip(&values[done..]) {
        dot_sum += x * y;
        norm_sum += y * y;
    }
    (dot_sum, norm_sum)
}

/// `a · b`, the same way as [`dot_and_norm`].
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma"))]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let (mut s0, mut s1, mut s2, mut s3) =
        ([0.0_f32; LANES], [0.0; LANES], [0.0; LANES], [0.0; LANES]);
    for (x, y) in a.chunks_exact(BLOCK).zip(b.chunks_exact(BLOCK)) {
        let (Ok(x), Ok(y)) = (<&[f32; BLOCK]>::try_from(x), <&[f32; BLOCK]>::try_from(y)) else {
            continue;
        };
        for lane in 0..LANES {
            s0[lane] += x[lane] * y[lane];
            s1[lane] += x[LANES + lane] * y[LANES + lane];
            s2[lane] += x[2 * LANES + lane] * y[2 * LANES + lane];
            s3[lane] += x[3 * LANES + lane] * y[3 * LANES + lane];
        }
    }
    let done = len - len % BLOCK;
    let mut sum = total([s0, s1, s2, s3]);
    for (x, y) in a[done..].iter().zip(&b[done..]) {
        sum += x * y;
    }
    sum
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
