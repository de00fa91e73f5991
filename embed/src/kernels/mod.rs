//! The numeric kernels of the CPU encoder, and the only `unsafe` code in this crate: matrix
//! products through the `gemm` crate (raw pointers and strides, checked here against the
//! slices they come from) and element-wise loops compiled a second time for AVX2 + FMA and
//! chosen at run time when the CPU has them.
//!
//! Everything else in the encoder calls the safe functions of this module: the f32 kernels
//! (`simd.rs`) and the INT8 products (`int8.rs`, built on the former).

#![allow(
    unsafe_code,
    reason = "gemm takes raw pointers; the AVX2 copies of the loops need target_feature calls"
)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::excessive_precision,
    clippy::unreadable_literal,
    clippy::inline_always,
    clippy::too_many_arguments,
    reason = "numeric kernels: sizes fit, polynomial constants are written as published; the \
              helpers must inline into the AVX2 copies to be vectorised with them; a product \
              names its operands, layouts and mode"
)]

mod int8;
mod simd;

pub use int8::{matmul_int8, PackedInt8, QuantizedRows};
pub use simd::*;
