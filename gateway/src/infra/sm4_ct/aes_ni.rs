//! SM4 with x86-64's AES instructions: SM4's S-box is AES's S-box between two affine maps, because
//! both invert in a field of 256 elements and any two such fields are isomorphic.
//!
//! S(x) = A(ψ⁻¹(inv(ψ(Ax + c))) + c with ψ the isomorphism into AES's field, and AES's S-box is
//! B·inv(u) + 0x63, so S(x) = M(aes_sbox(Nx + ψ(c)) + 0x63) + c for the linear maps N = ψ∘A and
//! M = A∘ψ⁻¹∘B⁻¹. `aesenclast` with a zero round key computes the AES S-box on 16 bytes at once
//! (after ShiftRows, which a byte shuffle undoes beforehand); the two affine maps are two
//! 16-entry lookups of 4-bit halves done with `pshufb`, inside registers: no memory address
//! depends on the data. Four blocks per register (lane i of register j: word j of block i),
//! four registers side by side.

use super::{affine_linear, change_basis, change_basis_back, gf256_mul, AFFINE_CONSTANT};
use std::arch::x86_64::*;

/// Multiplication in AES's field GF(2)[x]/(x⁸+x⁴+x³+x+1).
const fn aes_mul(a: u8, b: u8) -> u8 {
    gf256_mul(a, b, 0x1b)
}

/// γ⁰…γ⁷ for a root γ of SM4's polynomial in AES's field: x ↦ γ is the isomorphism ψ.
const GAMMA_POWERS: [u8; 8] = {
    let mut gamma = 2u8;
    loop {
        let (mut value, mut power, mut i) = (0u8, 1u8, 0);
        while i <= 8 {
            if (0x1f5u16 >> i) & 1 != 0 {
                value ^= power;
            }
            power = aes_mul(power, gamma);
            i += 1;
        }
        if value == 0 {
            break;
        }
        gamma += 1;
    }
    let mut powers = [1u8; 8];
    let mut i = 1;
    while i < 8 {
        powers[i] = aes_mul(powers[i - 1], gamma);
        i += 1;
    }
    powers
};

const fn to_aes(x: u8) -> u8 {
    change_basis(&GAMMA_POWERS, x)
}

const fn from_aes(y: u8) -> u8 {
    change_basis_back(&GAMMA_POWERS, y)
}

/// The inverse of the linear part B of AES's S-box affine map (B is b ⊕ b⋘1 ⊕ b⋘2 ⊕ b⋘3 ⊕ b⋘4).
const fn aes_affine_linear_inverse(b: u8) -> u8 {
    b.rotate_left(1) ^ b.rotate_left(3) ^ b.rotate_left(6)
}

const AES_AFFINE_CONSTANT: u8 = 0x63;

/// N = ψ∘A, applied before the AES S-box.
const fn before(x: u8) -> u8 {
    to_aes(affine_linear(x))
}

/// M = A∘ψ⁻¹∘B⁻¹, applied after it.
const fn after(z: u8) -> u8 {
    affine_linear(from_aes(aes_affine_linear_inverse(z)))
}

/// The lookups of an affine map by 4-bit halves: f(x) = low[x & 15] ^ high[x >> 4], the
/// constant in the low table.
const fn nibble_tables(before_map: bool) -> [[u8; 16]; 2] {
    let mut tables = [[0u8; 16]; 2];
    let mut n = 0;
    while n < 16 {
        if before_map {
            tables[0][n] = before(n as u8) ^ to_aes(AFFINE_CONSTANT);
            tables[1][n] = before((n as u8) << 4);
        } else {
            tables[0][n] = after(n as u8) ^ after(AES_AFFINE_CONSTANT) ^ AFFINE_CONSTANT;
            tables[1][n] = after((n as u8) << 4);
        }
        n += 1;
    }
    tables
}

const BEFORE: [[u8; 16]; 2] = nibble_tables(true);
const AFTER: [[u8; 16]; 2] = nibble_tables(false);

/// `aesenclast` applies ShiftRows after the S-box (byte r + 4c comes from r + 4(c + r)): byte j
/// is first moved to where ShiftRows will take it back from.
const UNSHIFT_ROWS: [u8; 16] = {
    let mut index = [0u8; 16];
    let mut j = 0;
    while j < 16 {
        let (row, column) = (j % 4, j / 4);
        index[j] = (row + 4 * ((column + 4 - row) % 4)) as u8;
        j += 1;
    }
    index
};

/// Rotations of each 32-bit lane left by 8, 16 and 24 bits, as byte shuffles.
const fn rotate_bytes(bytes: usize) -> [u8; 16] {
    let mut index = [0u8; 16];
    let mut j = 0;
    while j < 16 {
        index[j] = (j / 4 * 4 + (j % 4 + 4 - bytes) % 4) as u8;
        j += 1;
    }
    index
}

/// Proof that the CPU has AES-NI and SSSE3, which the functions of this module need.
#[derive(Clone, Copy)]
pub(super) struct AesNi(());

impl AesNi {
    pub(super) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("aes") && is_x86_feature_detected!("ssse3")).then_some(Self(()))
    }

    /// Encrypts `4 * G` blocks.
    pub(super) fn encrypt_groups<const G: usize>(
        self,
        round_keys: &[u32; 32],
        blocks: &mut [[u8; 16]],
    ) {
        #[target_feature(enable = "aes,ssse3")]
        fn encrypt<const G: usize>(round_keys: &[u32; 32], blocks: &mut [[u8; 16]]) {
            // SAFETY: this function runs only where the features `__m128i`'s operations need are.
            unsafe { encrypt_registers::<__m128i, G>(round_keys, blocks) }
        }
        // SAFETY: `self` exists only when the CPU has the features `encrypt` enables.
        unsafe { encrypt::<G>(round_keys, blocks) };
    }
}

/// A register of 32-bit lanes, word j of a block in each, and what SM4's round does to it:
/// 128 bits with AES-NI, 256 with VAES (whose instructions work on each 128-bit half alone).
/// The functions are unsafe: they need the CPU features of their core, which the caller has
/// made sure of, and they are inlined into a function compiled with those features.
pub(super) trait Register: Copy {
    /// Blocks per register.
    const BLOCKS: usize;
    /// The 16 bytes in every 128-bit half.
    unsafe fn repeat(bytes: [u8; 16]) -> Self;
    unsafe fn splat(word: u32) -> Self;
    /// Lane i from `words[i]`.
    unsafe fn load(words: &[i32]) -> Self;
    unsafe fn store(self, words: &mut [i32]);
    unsafe fn xor(self, other: Self) -> Self;
    unsafe fn and(self, other: Self) -> Self;
    /// Each 16-bit lane shifted right by 4: the high nibbles, once masked.
    unsafe fn high_nibbles(self) -> Self;
    /// Bytes of `self` picked by `indices` (within each 128-bit half).
    unsafe fn shuffle(self, indices: Self) -> Self;
    /// AES's last round with a zero round key: ShiftRows after the S-box.
    unsafe fn aes_last_round(self) -> Self;
    /// Each 32-bit lane rotated left by 2.
    unsafe fn rotate_left_2(self) -> Self;
}

impl Register for __m128i {
    const BLOCKS: usize = 4;

    #[inline]
    #[target_feature(enable = "aes,ssse3")]
    unsafe fn repeat(bytes: [u8; 16]) -> Self {
        _mm_loadu_si128(bytes.as_ptr().cast())
    }

    #[inline]
    #[target_feature(enable = "aes,ssse3")]
    unsafe fn splat(word: u32) -> Self {
        _mm_set1_epi32(word as i32)
    }

    #[inline]
    #[target_feature(enable = "aes,ssse3")]
    unsafe fn load(words: &[i32]) -> Self {
        _mm_setr_epi32(words[0], words[1], words[2], words[3])
    }

    #[inline]
    #[target_feature(enable = "aes,ssse3")]
    unsafe fn store(self, words: &mut [i32]) {
        _mm_storeu_si128(words[..4].as_mut_ptr().cast(), self)
    }

    #[inline]
    #[target_feature(enable = "aes,ssse3")]
    unsafe fn xor(self, other: Self) -> Self {
        _mm_xor_si128(self, other)
    }

    #[inline]
    #[target_feature(enable = "aes,ssse3")]
    unsafe fn and(self, other: Self) -> Self {
        _mm_and_si128(self, other)
    }

    #[inline]
    #[target_feature(enable = "aes,ssse3")]
    unsafe fn high_nibbles(self) -> Self {
        _mm_srli_epi16::<4>(self)
    }

    #[inline]
    #[target_feature(enable = "aes,ssse3")]
    unsafe fn shuffle(self, indices: Self) -> Self {
        _mm_shuffle_epi8(self, indices)
    }

    #[inline]
    #[target_feature(enable = "aes,ssse3")]
    unsafe fn aes_last_round(self) -> Self {
        _mm_aesenclast_si128(self, _mm_setzero_si128())
    }

    #[inline]
    #[target_feature(enable = "aes,ssse3")]
    unsafe fn rotate_left_2(self) -> Self {
        _mm_or_si128(_mm_slli_epi32::<2>(self), _mm_srli_epi32::<30>(self))
    }
}

struct Constants<R> {
    low_nibbles: R,
    before: [R; 2],
    after: [R; 2],
    unshift_rows: R,
    rotate: [R; 3],
}

/// The affine map whose nibble tables are `tables`, on every byte.
#[inline(always)]
unsafe fn affine<R: Register>(x: R, tables: &[R; 2], low_nibbles: R) -> R {
    let low = x.and(low_nibbles);
    let high = x.high_nibbles().and(low_nibbles);
    tables[0].shuffle(low).xor(tables[1].shuffle(high))
}

/// T = L∘τ on a register of words.
#[inline(always)]
unsafe fn round_function<R: Register>(c: &Constants<R>, a: R) -> R {
    let u = affine(a, &c.before, c.low_nibbles).shuffle(c.unshift_rows);
    let s = affine(u.aes_last_round(), &c.after, c.low_nibbles);
    // L(s) = s ⊕ s⋘24 ⊕ (s ⊕ s⋘8 ⊕ s⋘16)⋘2.
    let r8 = s.shuffle(c.rotate[0]);
    let r16 = s.shuffle(c.rotate[1]);
    let r24 = s.shuffle(c.rotate[2]);
    s.xor(r24).xor(s.xor(r8).xor(r16).rotate_left_2())
}

/// Encrypts `G` registers' worth of blocks. Inlined into a function compiled with the
/// features `R` needs (see [`Register`]).
#[inline(always)]
pub(super) unsafe fn encrypt_registers<R: Register, const G: usize>(
    round_keys: &[u32; 32],
    blocks: &mut [[u8; 16]],
) {
    assert_eq!(blocks.len(), R::BLOCKS * G);
    // No closures here: they would not be compiled with the caller's CPU features, and the
    // register operations in them would not be inlined.
    let c = Constants {
        low_nibbles: R::repeat([0x0f; 16]),
        before: [R::repeat(BEFORE[0]), R::repeat(BEFORE[1])],
        after: [R::repeat(AFTER[0]), R::repeat(AFTER[1])],
        unshift_rows: R::repeat(UNSHIFT_ROWS),
        rotate: [
            R::repeat(rotate_bytes(1)),
            R::repeat(rotate_bytes(2)),
            R::repeat(rotate_bytes(3)),
        ],
    };
    let mut words = [0i32; 8];
    let mut x = [[R::splat(0); 4]; G];
    for (registers, group) in x.iter_mut().zip(blocks.chunks_exact(R::BLOCKS)) {
        for (j, register) in registers.iter_mut().enumerate() {
            for (word, block) in words.iter_mut().zip(group) {
                *word = i32::from_be_bytes(block[4 * j..4 * j + 4].try_into().unwrap());
            }
            *register = R::load(&words);
        }
    }
    for rk in round_keys.chunks_exact(4) {
        for (j, &rk) in rk.iter().enumerate() {
            let key = R::splat(rk);
            for x in x.iter_mut() {
                let a = x[(j + 1) % 4]
                    .xor(x[(j + 2) % 4])
                    .xor(x[(j + 3) % 4].xor(key));
                x[j] = x[j].xor(round_function(&c, a));
            }
        }
    }
    for (registers, group) in x.iter().zip(blocks.chunks_exact_mut(R::BLOCKS)) {
        // The ciphertext is the last four words in reverse order.
        for (j, register) in registers.iter().rev().enumerate() {
            register.store(&mut words);
            for (block, word) in group.iter_mut().zip(words) {
                block[4 * j..4 * j + 4].copy_from_slice(&word.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{algebraic_sbox, field_mul};
    use super::*;

    #[test]
    fn aes_field_is_sm4s_field_in_another_basis() {
        for a in 0..=255u8 {
            assert_eq!(from_aes(to_aes(a)), a);
            for b in 0..=255u8 {
                assert_eq!(to_aes(field_mul(a, b)), aes_mul(to_aes(a), to_aes(b)));
            }
        }
    }

    /// The S-box part of the round, with the linear transform left out: all 256 bytes in 16
    /// registers.
    #[test]
    fn the_aes_path_is_the_sbox_on_all_256_inputs() {
        let Some(_) = AesNi::detect() else {
            eprintln!("no AES-NI on this CPU: skipped");
            return;
        };
        #[target_feature(enable = "aes,ssse3")]
        fn sbox16(input: [u8; 16]) -> [u8; 16] {
            // SAFETY: compiled with the features `__m128i`'s operations need.
            unsafe {
                let repeat = <__m128i as Register>::repeat;
                let mask = repeat([0x0f; 16]);
                let u = affine(repeat(input), &BEFORE.map(|t| repeat(t)), mask)
                    .shuffle(repeat(UNSHIFT_ROWS));
                let s = affine(u.aes_last_round(), &AFTER.map(|t| repeat(t)), mask);
                let mut words = [0i32; 4];
                s.store(&mut words);
                let mut out = [0u8; 16];
                for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
                    chunk.copy_from_slice(&word.to_le_bytes());
                }
                out
            }
        }
        for high in 0..16u8 {
            let input: [u8; 16] = std::array::from_fn(|i| high << 4 | i as u8);
            // SAFETY: detected above.
            let output = unsafe { sbox16(input) };
            assert_eq!(output, input.map(algebraic_sbox), "{input:02x?}");
        }
    }
}
