//! SM4 with VAES: the method of [`super::aes_ni`] on 256-bit registers, whose `vaesenclast`
//! runs AES's last round on both 128-bit halves at once. Eight blocks per register (lane i of
//! register j: word j of block i), one register or four side by side. A run of counters costs
//! what it costs with AES-NI and covers eight blocks instead of four: a record under 128 bytes
//! is one run, and GCM's batches are twice as large.

use super::aes_ni::{encrypt_registers, Register};
use std::arch::x86_64::*;

/// Proof that the CPU has VAES and AVX2, which the functions of this module need.
#[derive(Clone, Copy)]
pub(super) struct Vaes(());

impl Vaes {
    pub(super) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("aes")
            && is_x86_feature_detected!("vaes")
            && is_x86_feature_detected!("avx2"))
        .then_some(Self(()))
    }

    /// Encrypts `8 * G` blocks.
    pub(super) fn encrypt_groups<const G: usize>(
        self,
        round_keys: &[u32; 32],
        blocks: &mut [[u8; 16]],
    ) {
        #[target_feature(enable = "aes,avx2,vaes")]
        fn encrypt<const G: usize>(round_keys: &[u32; 32], blocks: &mut [[u8; 16]]) {
            // SAFETY: this function runs only where the features `__m256i`'s operations need are.
            unsafe { encrypt_registers::<__m256i, G>(round_keys, blocks) }
        }
        // SAFETY: `self` exists only when the CPU has the features `encrypt` enables.
        unsafe { encrypt::<G>(round_keys, blocks) };
    }
}

impl Register for __m256i {
    const BLOCKS: usize = 8;

    #[inline]
    #[target_feature(enable = "aes,avx2,vaes")]
    unsafe fn repeat(bytes: [u8; 16]) -> Self {
        _mm256_broadcastsi128_si256(_mm_loadu_si128(bytes.as_ptr().cast()))
    }

    #[inline]
    #[target_feature(enable = "aes,avx2,vaes")]
    unsafe fn splat(word: u32) -> Self {
        _mm256_set1_epi32(word as i32)
    }

    #[inline]
    #[target_feature(enable = "aes,avx2,vaes")]
    unsafe fn load(words: &[i32]) -> Self {
        _mm256_loadu_si256(words[..8].as_ptr().cast())
    }

    #[inline]
    #[target_feature(enable = "aes,avx2,vaes")]
    unsafe fn store(self, words: &mut [i32]) {
        _mm256_storeu_si256(words[..8].as_mut_ptr().cast(), self)
    }

    #[inline]
    #[target_feature(enable = "aes,avx2,vaes")]
    unsafe fn xor(self, other: Self) -> Self {
        _mm256_xor_si256(self, other)
    }

    #[inline]
    #[target_feature(enable = "aes,avx2,vaes")]
    unsafe fn and(self, other: Self) -> Self {
        _mm256_and_si256(self, other)
    }

    #[inline]
    #[target_feature(enable = "aes,avx2,vaes")]
    unsafe fn high_nibbles(self) -> Self {
        _mm256_srli_epi16::<4>(self)
    }

    #[inline]
    #[target_feature(enable = "aes,avx2,vaes")]
    unsafe fn shuffle(self, indices: Self) -> Self {
        _mm256_shuffle_epi8(self, indices)
    }

    #[inline]
    #[target_feature(enable = "aes,avx2,vaes")]
    unsafe fn aes_last_round(self) -> Self {
        _mm256_aesenclast_epi128(self, _mm256_setzero_si256())
    }

    #[inline]
    #[target_feature(enable = "aes,avx2,vaes")]
    unsafe fn rotate_left_2(self) -> Self {
        _mm256_or_si256(_mm256_slli_epi32::<2>(self), _mm256_srli_epi32::<30>(self))
    }
}
