//! The portable constant-time SM4: the S-box as a boolean circuit on words whose bits are
//! independent lanes, 64 blocks side by side or one block's four S-box bytes at a time.
//!
//! The inversion in GF(2⁸) is computed in the tower field GF((2⁴)²) — an element's inverse takes
//! one inversion in GF(2⁴) (a few ANDs of its bits, in algebraic normal form) and three
//! multiplications there —, with the changes of basis to and from SM4's polynomial basis folded
//! into the S-box's two affine maps. The matrices are computed at compile time from the fields'
//! definitions, and the tests hold the circuit to the algebraic S-box on all 256 inputs. The
//! circuit is only XOR, AND and NOT of whole words, in an order fixed at compile time.

use super::{affine_linear, change_basis, change_basis_back, AFFINE_CONSTANT};
use std::ops::{BitAnd, BitXor, Not};

// The tower field, for computing the circuit's constants at compile time (and checking them in
// the tests).

/// Multiplication in GF(2⁴) = GF(2)[y]/(y⁴+y+1).
const fn gf16_mul(a: u8, b: u8) -> u8 {
    let (mut a, mut product, mut i) = (a, 0u8, 0);
    while i < 4 {
        if (b >> i) & 1 != 0 {
            product ^= a;
        }
        a <<= 1;
        if a & 0x10 != 0 {
            a ^= 0x13;
        }
        i += 1;
    }
    product
}

/// The smallest λ for which z²+z+λ is irreducible over GF(2⁴): GF(2⁸) = GF(2⁴)[z]/(z²+z+λ).
const LAMBDA: u8 = {
    let mut lambda = 1;
    loop {
        let mut t = 0;
        while t < 16 && gf16_mul(t, t) ^ t != lambda {
            t += 1;
        }
        if t == 16 {
            break lambda;
        }
        lambda += 1;
    }
};

/// Multiplication in the tower field, `a₁z + a₀` as the byte `a₁ << 4 | a₀`: with z² = z + λ,
/// (a₁z+a₀)(b₁z+b₀) = (a₁b₁ + a₁b₀ + a₀b₁)z + (a₁b₁λ + a₀b₀).
const fn tower_mul(a: u8, b: u8) -> u8 {
    let (a0, a1, b0, b1) = (a & 15, a >> 4, b & 15, b >> 4);
    let high = gf16_mul(a1, b1) ^ gf16_mul(a1, b0) ^ gf16_mul(a0, b1);
    let low = gf16_mul(gf16_mul(a1, b1), LAMBDA) ^ gf16_mul(a0, b0);
    high << 4 | low
}

/// β⁰…β⁷ for a root β of SM4's polynomial in the tower field: x ↦ β is the isomorphism.
const BETA_POWERS: [u8; 8] = {
    let mut beta = 2u8;
    loop {
        let (mut value, mut power, mut i) = (0u8, 1u8, 0);
        while i <= 8 {
            if (0x1f5u16 >> i) & 1 != 0 {
                value ^= power;
            }
            power = tower_mul(power, beta);
            i += 1;
        }
        if value == 0 {
            break;
        }
        beta += 1;
    }
    let mut powers = [1u8; 8];
    let mut i = 1;
    while i < 8 {
        powers[i] = tower_mul(powers[i - 1], beta);
        i += 1;
    }
    powers
};

/// From SM4's basis to the tower field's.
const fn to_tower(x: u8) -> u8 {
    change_basis(&BETA_POWERS, x)
}

/// From the tower field's basis back to SM4's.
const fn from_tower(y: u8) -> u8 {
    change_basis_back(&BETA_POWERS, y)
}

/// The rows of a linear map's bit matrix from its images of the 8 basis bytes: bit j of row r is
/// bit r of the image of bit j.
const fn rows(images: [u8; 8]) -> [u8; 8] {
    let mut rows = [0u8; 8];
    let mut r = 0;
    while r < 8 {
        let mut j = 0;
        while j < 8 {
            rows[r] |= ((images[j] >> r) & 1) << j;
            j += 1;
        }
        r += 1;
    }
    rows
}

/// Into the tower field after the first affine map (its linear part; the constant is
/// `INTO_TOWER_CONSTANT`).
const INTO_TOWER: [u8; 8] = {
    let mut images = [0u8; 8];
    let mut j = 0;
    while j < 8 {
        images[j] = to_tower(affine_linear(1 << j));
        j += 1;
    }
    rows(images)
};

const INTO_TOWER_CONSTANT: u8 = to_tower(AFFINE_CONSTANT);

/// Out of the tower field, then the second affine map's linear part (its constant is
/// `AFFINE_CONSTANT`).
const OUT_OF_TOWER: [u8; 8] = {
    let mut images = [0u8; 8];
    let mut j = 0;
    while j < 8 {
        images[j] = affine_linear(from_tower(1 << j));
        j += 1;
    }
    rows(images)
};

/// The linear part of the norm a₁²λ + a₁a₀ + a₀² of `a₁z + a₀`: a₁²λ + a₀² (squaring is linear).
const NORM_SQUARES: [u8; 8] = {
    let mut images = [0u8; 8];
    let mut j = 0;
    while j < 8 {
        let (a0, a1) = ((1u8 << j) & 15, (1u8 << j) >> 4);
        images[j] = gf16_mul(LAMBDA, gf16_mul(a1, a1)) ^ gf16_mul(a0, a0);
        j += 1;
    }
    rows(images)
};

/// The inverse in GF(2⁴) in algebraic normal form: bit m of `GF16_INVERSE_ANF[r]` is set when the
/// monomial ∏ᵢ∈ₘ tᵢ appears in bit r of t⁻¹ (= t¹⁴).
const GF16_INVERSE_ANF: [u16; 4] = {
    let mut anf = [0u16; 4];
    let mut t = 0;
    while t < 16 {
        let (mut inverse, mut k) = (1u8, 0);
        while k < 14 {
            inverse = gf16_mul(inverse, t as u8);
            k += 1;
        }
        if t == 0 {
            inverse = 0;
        }
        let mut r = 0;
        while r < 4 {
            anf[r] |= (((inverse >> r) & 1) as u16) << t;
            r += 1;
        }
        t += 1;
    }
    // The Möbius transform turns each truth table into its monomials' coefficients.
    let mut r = 0;
    while r < 4 {
        let mut i = 0;
        while i < 4 {
            let mut m = 0;
            while m < 16 {
                if m & (1 << i) != 0 {
                    anf[r] ^= ((anf[r] >> (m ^ (1 << i))) & 1) << m;
                }
                m += 1;
            }
            i += 1;
        }
        r += 1;
    }
    anf
};

// The circuit, on words of independent one-bit lanes (bit planes).

trait Lanes:
    Copy + Default + BitXor<Output = Self> + BitAnd<Output = Self> + Not<Output = Self>
{
}

impl<T: Copy + Default + BitXor<Output = T> + BitAnd<Output = T> + Not<Output = T>> Lanes for T {}

/// A linear map on the planes of bytes: XORs chosen by a constant matrix (no data in the choice).
#[inline(always)]
fn linear_map<T: Lanes, const N: usize>(rows: &[u8; 8], x: &[T; 8]) -> [T; N] {
    std::array::from_fn(|r| {
        (0..8)
            .filter(|&j| (rows[r] >> j) & 1 == 1)
            .fold(T::default(), |acc, j| acc ^ x[j])
    })
}

/// Complements the planes where a constant byte has a one: adding the constant.
#[inline(always)]
fn add_constant<T: Lanes>(constant: u8, x: &mut [T; 8]) {
    for (i, plane) in x.iter_mut().enumerate() {
        if (constant >> i) & 1 == 1 {
            *plane = !*plane;
        }
    }
}

#[inline(always)]
fn gf16_mul_lanes<T: Lanes>(a: [T; 4], b: [T; 4]) -> [T; 4] {
    let p = |i: usize, j: usize| a[i] & b[j];
    let c0 = p(0, 0);
    let c1 = p(0, 1) ^ p(1, 0);
    let c2 = p(0, 2) ^ p(1, 1) ^ p(2, 0);
    let c3 = p(0, 3) ^ p(1, 2) ^ p(2, 1) ^ p(3, 0);
    let c4 = p(1, 3) ^ p(2, 2) ^ p(3, 1);
    let c5 = p(2, 3) ^ p(3, 2);
    let c6 = p(3, 3);
    // y⁴ = y + 1, y⁵ = y² + y, y⁶ = y³ + y².
    [c0 ^ c4, c1 ^ c4 ^ c5, c2 ^ c5 ^ c6, c3 ^ c6]
}

#[inline(always)]
fn gf16_inverse_lanes<T: Lanes>(t: [T; 4]) -> [T; 4] {
    let mut monomials = [T::default(); 16];
    for m in 1..16usize {
        let lowest = m.trailing_zeros() as usize;
        let rest = m & (m - 1);
        monomials[m] = if rest == 0 {
            t[lowest]
        } else {
            monomials[rest] & t[lowest]
        };
    }
    std::array::from_fn(|r| {
        (1..16)
            .filter(|&m| (GF16_INVERSE_ANF[r] >> m) & 1 == 1)
            .fold(T::default(), |acc, m| acc ^ monomials[m])
    })
}

/// The S-box on bit planes: plane i holds bit i of each lane's byte.
#[inline(always)]
fn sbox_lanes<T: Lanes>(x: [T; 8]) -> [T; 8] {
    let mut a: [T; 8] = linear_map(&INTO_TOWER, &x);
    add_constant(INTO_TOWER_CONSTANT, &mut a);
    let a0 = [a[0], a[1], a[2], a[3]];
    let a1 = [a[4], a[5], a[6], a[7]];
    // (a₁z + a₀)⁻¹ = (a₁d)z + (a₀ + a₁)d with d the inverse of the norm.
    let squares: [T; 4] = linear_map(&NORM_SQUARES, &a);
    let product = gf16_mul_lanes(a1, a0);
    let d = gf16_inverse_lanes(std::array::from_fn(|i| squares[i] ^ product[i]));
    let b1 = gf16_mul_lanes(a1, d);
    let b0 = gf16_mul_lanes(std::array::from_fn(|i| a0[i] ^ a1[i]), d);
    let b = [b0[0], b0[1], b0[2], b0[3], b1[0], b1[1], b1[2], b1[3]];
    let mut out: [T; 8] = linear_map(&OUT_OF_TOWER, &b);
    add_constant(AFFINE_CONSTANT, &mut out);
    out
}

/// The S-box on each byte of a word, the four bytes as four lanes of one circuit.
pub(super) fn substitute(a: u32) -> u32 {
    let out = sbox_lanes(std::array::from_fn(|i| a >> i));
    out.iter()
        .enumerate()
        .fold(0, |word, (i, &plane)| word | (plane & 0x0101_0101) << i)
}

/// The round's linear transform L.
fn linear(b: u32) -> u32 {
    b ^ b.rotate_left(2) ^ b.rotate_left(10) ^ b.rotate_left(18) ^ b.rotate_left(24)
}

/// One block alone.
pub(super) fn encrypt_block(round_keys: &[u32; 32], block: &[u8; 16]) -> [u8; 16] {
    let mut x: [u32; 4] =
        std::array::from_fn(|i| u32::from_be_bytes(block[4 * i..4 * i + 4].try_into().unwrap()));
    for rk in round_keys.chunks_exact(4) {
        for j in 0..4 {
            x[j] ^= linear(substitute(
                x[(j + 1) % 4] ^ x[(j + 2) % 4] ^ x[(j + 3) % 4] ^ rk[j],
            ));
        }
    }
    let mut out = [0u8; 16];
    for (i, word) in x.iter().rev().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

pub(super) const LANES: usize = 64;

/// Transposes a 64×64 bit matrix (bit c of row r ↔ bit r of row c): at each step, swaps the
/// off-diagonal halves of each block of the previous step.
fn transpose(a: &mut [u64; 64]) {
    let (mut j, mut mask) = (32, 0x0000_0000_ffff_ffff_u64);
    while j != 0 {
        for r in (0..64).filter(|r| r & j == 0) {
            let t = ((a[r] >> j) ^ a[r + j]) & mask;
            a[r + j] ^= t;
            a[r] ^= t << j;
        }
        j >>= 1;
        mask ^= mask << j;
    }
}

/// One round of 64 blocks: word `j` of the state gets T(the other three ^ rk), bitsliced.
#[inline(always)]
fn round_lanes(x: &mut [[u64; 32]; 4], j: usize, rk: u32) {
    let t: [u64; 32] = std::array::from_fn(|b| {
        x[(j + 1) % 4][b]
            ^ x[(j + 2) % 4][b]
            ^ x[(j + 3) % 4][b]
            ^ u64::from((rk >> b) & 1).wrapping_neg()
    });
    let mut s = [0u64; 32];
    for byte in 0..4 {
        let out = sbox_lanes::<u64>(t[8 * byte..8 * byte + 8].try_into().unwrap());
        s[8 * byte..8 * byte + 8].copy_from_slice(&out);
    }
    // L: bit b of (s <<< r) is bit b - r of s.
    for b in 0..32 {
        x[j][b] ^= s[b] ^ s[(b + 30) % 32] ^ s[(b + 22) % 32] ^ s[(b + 14) % 32] ^ s[(b + 8) % 32];
    }
}

/// 64 blocks side by side.
pub(super) fn encrypt_lanes(
    round_keys: &[u32; 32],
    blocks: &[[u8; 16]; LANES],
) -> [[u8; 16]; LANES] {
    // Rows of 64 bits: words 0 and 1 of each block, then words 2 and 3; transposed, row c holds
    // bit c of those for all blocks.
    let mut high: [u64; 64] =
        std::array::from_fn(|k| u64::from_be_bytes(blocks[k][..8].try_into().unwrap()));
    let mut low: [u64; 64] =
        std::array::from_fn(|k| u64::from_be_bytes(blocks[k][8..].try_into().unwrap()));
    transpose(&mut high);
    transpose(&mut low);
    let mut x = [[0u64; 32]; 4];
    x[0].copy_from_slice(&high[32..]);
    x[1].copy_from_slice(&high[..32]);
    x[2].copy_from_slice(&low[32..]);
    x[3].copy_from_slice(&low[..32]);
    for rk in round_keys.chunks_exact(4) {
        for (j, &rk) in rk.iter().enumerate() {
            round_lanes(&mut x, j, rk);
        }
    }
    // The ciphertext is the last four words in reverse order.
    high[32..].copy_from_slice(&x[3]);
    high[..32].copy_from_slice(&x[2]);
    low[32..].copy_from_slice(&x[1]);
    low[..32].copy_from_slice(&x[0]);
    transpose(&mut high);
    transpose(&mut low);
    std::array::from_fn(|k| {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&high[k].to_be_bytes());
        out[8..].copy_from_slice(&low[k].to_be_bytes());
        out
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{algebraic_sbox, field_mul};
    use super::*;
    use rand::Rng;

    #[test]
    fn the_tower_field_is_sm4s_field_in_another_basis() {
        for a in 0..=255u8 {
            assert_eq!(from_tower(to_tower(a)), a);
            for b in 0..=255u8 {
                assert_eq!(
                    to_tower(field_mul(a, b)),
                    tower_mul(to_tower(a), to_tower(b)),
                    "{a} · {b}"
                );
            }
        }
    }

    #[test]
    fn the_circuit_is_the_sbox_on_all_256_inputs() {
        // 64 lanes at a time: lane k of round q holds the byte 64q + k.
        for q in 0..4u64 {
            let planes: [u64; 8] = std::array::from_fn(|i| {
                (0..64).fold(0, |plane, k| plane | (((64 * q + k) >> i) & 1) << k)
            });
            let out = sbox_lanes(planes);
            for k in 0..64 {
                let byte = (0..8).fold(0u8, |byte, i| byte | (((out[i] >> k) & 1) as u8) << i);
                assert_eq!(
                    byte,
                    algebraic_sbox((64 * q + k) as u8),
                    "S({})",
                    64 * q + k
                );
            }
        }
        // Four bytes of a word at once, each byte in each position.
        for x in 0..=255u8 {
            for position in 0..4 {
                let word = u32::from(x) << (8 * position) | 0x5a5a5a5a & !(0xff << (8 * position));
                let expected = u32::from_be_bytes(word.to_be_bytes().map(algebraic_sbox));
                assert_eq!(substitute(word), expected, "{word:08x}");
            }
        }
    }

    #[test]
    fn transposing_twice_is_the_identity_and_moves_each_bit() {
        let mut rng = rand::thread_rng();
        let original: [u64; 64] = std::array::from_fn(|_| rng.gen());
        let mut a = original;
        transpose(&mut a);
        for (r, row) in original.iter().enumerate() {
            for (c, column) in a.iter().enumerate() {
                assert_eq!((column >> r) & 1, (row >> c) & 1);
            }
        }
        transpose(&mut a);
        assert_eq!(a, original);
    }
}
