//! Cosine similarity: the one dot-product kernel the exact scan, the index's queue and the
//! rescoring of index results share.

/// `(query · v, v · v)` in one pass, sixteen lanes wide so the compiler vectorises it; compiled
/// also for AVX-512 and for AVX2 + FMA and chosen at run time (`multiversion`), since the
/// build's baseline is SSE2.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma"))]
fn dot_and_norm(query: &[f32], values: &[f32]) -> (f32, f32) {
    const LANES: usize = 16;
    let mut dot = [0.0_f32; LANES];
    let mut norm = [0.0_f32; LANES];
    let mut pairs = query.chunks_exact(LANES).zip(values.chunks_exact(LANES));
    for (q, v) in &mut pairs {
        for lane in 0..LANES {
            dot[lane] += q[lane] * v[lane];
            norm[lane] += v[lane] * v[lane];
        }
    }
    let tail = query.len() - query.len() % LANES;
    let (mut dot_sum, mut norm_sum): (f32, f32) = (dot.iter().sum(), norm.iter().sum());
    for (q, v) in query[tail..].iter().zip(&values[tail..]) {
        dot_sum += q * v;
        norm_sum += v * v;
    }
    (dot_sum, norm_sum)
}

/// `a · b`, sixteen lanes wide; compiled for AVX-512 and AVX2 + FMA like [`dot_and_norm`].
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma"))]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut sums = [0.0_f32; LANES];
    let mut pairs = a.chunks_exact(LANES).zip(b.chunks_exact(LANES));
    for (x, y) in &mut pairs {
        for lane in 0..LANES {
            sums[lane] += x[lane] * y[lane];
        }
    }
    let tail = a.len().min(b.len()) - a.len().min(b.len()) % LANES;
    let mut sum: f32 = sums.iter().sum();
    for (x, y) in a[tail..].iter().zip(&b[tail..]) {
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
        let long: Vec<f32> = (0..19_u8).map(f32::from).collect();
        let (dot, norm) = dot_and_norm(&long, &long);
        let expected: f32 = long.iter().map(|v| v * v).sum();
        assert!((dot - expected).abs() < 1e-3 && (norm - expected).abs() < 1e-3);
    }
}
