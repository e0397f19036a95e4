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
        assert_eq!(blocks.len(), 4 * G);
        let mut groups: [[[u8; 16]; 4]; G] =
            std::array::from_fn(|g| std::array::from_fn(|i| blocks[4 * g + i]));
        // SAFETY: `self` exists only when the CPU has the features `encrypt` enables.
        unsafe { encrypt(round_keys, &mut groups) };
        for (i, block) in blocks.iter_mut().enumerate() {
            *block = groups[i / 4][i % 4];
        }
    }
}

#[target_feature(enable = "aes,ssse3")]
fn bytes(b: [u8; 16]) -> __m128i {
    let b = b.map(|b| b as i8);
    _mm_setr_epi8(
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    )
}

struct Constants {
    low_nibbles: __m128i,
    before: [__m128i; 2],
    after: [__m128i; 2],
    unshift_rows: __m128i,
    rotate: [__m128i; 3],
}

#[target_feature(enable = "aes,ssse3")]
fn affine(x: __m128i, tables: &[__m128i; 2], low_nibbles: __m128i) -> __m128i {
    let low = _mm_and_si128(x, low_nibbles);
    let high = _mm_and_si128(_mm_srli_epi16::<4>(x), low_nibbles);
    _mm_xor_si128(
        _mm_shuffle_epi8(tables[0], low),
        _mm_shuffle_epi8(tables[1], high),
    )
}

/// T = L∘τ on four words.
#[target_feature(enable = "aes,ssse3")]
fn round_function(c: &Constants, a: __m128i) -> __m128i {
    let u = _mm_shuffle_epi8(affine(a, &c.before, c.low_nibbles), c.unshift_rows);
    let s = affine(
        _mm_aesenclast_si128(u, _mm_setzero_si128()),
        &c.after,
        c.low_nibbles,
    );
    // L(s) = s ⊕ s⋘24 ⊕ (s ⊕ s⋘8 ⊕ s⋘16)⋘2.
    let r8 = _mm_shuffle_epi8(s, c.rotate[0]);
    let r16 = _mm_shuffle_epi8(s, c.rotate[1]);
    let r24 = _mm_shuffle_epi8(s, c.rotate[2]);
    let t = _mm_xor_si128(_mm_xor_si128(s, r8), r16);
    let t2 = _mm_or_si128(_mm_slli_epi32::<2>(t), _mm_srli_epi32::<30>(t));
    _mm_xor_si128(_mm_xor_si128(s, r24), t2)
}

#[target_feature(enable = "aes,ssse3")]
fn encrypt<const G: usize>(round_keys: &[u32; 32], groups: &mut [[[u8; 16]; 4]; G]) {
    let c = Constants {
        low_nibbles: _mm_set1_epi8(0x0f),
        before: BEFORE.map(|t| bytes(t)),
        after: AFTER.map(|t| bytes(t)),
        unshift_rows: bytes(UNSHIFT_ROWS),
        rotate: [
            bytes(rotate_bytes(1)),
            bytes(rotate_bytes(2)),
            bytes(rotate_bytes(3)),
        ],
    };
    let word = |block: &[u8; 16], j: usize| {
        i32::from_be_bytes(block[4 * j..4 * j + 4].try_into().unwrap())
    };
    let mut x: [[__m128i; 4]; G] = std::array::from_fn(|g| {
        let b = &groups[g];
        std::array::from_fn(|j| {
            _mm_setr_epi32(
                word(&b[0], j),
                word(&b[1], j),
                word(&b[2], j),
                word(&b[3], j),
            )
        })
    });
    for rk in round_keys.chunks_exact(4) {
        for (j, &rk) in rk.iter().enumerate() {
            let key = _mm_set1_epi32(rk as i32);
            for x in x.iter_mut() {
                let a = _mm_xor_si128(
                    _mm_xor_si128(x[(j + 1) % 4], x[(j + 2) % 4]),
                    _mm_xor_si128(x[(j + 3) % 4], key),
                );
                x[j] = _mm_xor_si128(x[j], round_function(&c, a));
            }
        }
    }
    for (x, blocks) in x.iter().zip(groups.iter_mut()) {
        // The ciphertext is the last four words in reverse order.
        for (j, &words) in x.iter().rev().enumerate() {
            let lanes = [
                _mm_cvtsi128_si32(words),
                _mm_cvtsi128_si32(_mm_srli_si128::<4>(words)),
                _mm_cvtsi128_si32(_mm_srli_si128::<8>(words)),
                _mm_cvtsi128_si32(_mm_srli_si128::<12>(words)),
            ];
            for (block, lane) in blocks.iter_mut().zip(lanes) {
                block[4 * j..4 * j + 4].copy_from_slice(&lane.to_be_bytes());
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
            let c = [bytes(BEFORE[0]), bytes(BEFORE[1])];
            let d = [bytes(AFTER[0]), bytes(AFTER[1])];
            let mask = _mm_set1_epi8(0x0f);
            let u = _mm_shuffle_epi8(affine(bytes(input), &c, mask), bytes(UNSHIFT_ROWS));
            let s = affine(_mm_aesenclast_si128(u, _mm_setzero_si128()), &d, mask);
            let mut out = [0u8; 16];
            for (i, chunk) in out.chunks_exact_mut(4).enumerate() {
                let lane = _mm_cvtsi128_si32(match i {
                    0 => s,
                    1 => _mm_srli_si128::<4>(s),
                    2 => _mm_srli_si128::<8>(s),
                    _ => _mm_srli_si128::<12>(s),
                });
                chunk.copy_from_slice(&lane.to_le_bytes());
            }
            out
        }
        for high in 0..16u8 {
            let input: [u8; 16] = std::array::from_fn(|i| high << 4 | i as u8);
            // SAFETY: detected above.
            let output = unsafe { sbox16(input) };
            assert_eq!(output, input.map(algebraic_sbox), "{input:02x?}");
        }
    }
}
