//! The SM4 block cipher (GB/T 32907-2016) in constant time, for the GCM sealing of everything
//! stored at rest (`AesGcm<Sm4, U12>`): no memory address and no branch depends on the key, the
//! plaintext or the keystream.
//!
//! A table-driven SM4 (an S-box table, or tables that fold the S-box into the linear transform)
//! reads memory at addresses made of key and data bytes, which a process sharing the CPU's
//! caches can observe. Here the S-box is computed instead:
//! - with the AES instructions on x86-64 CPUs that have them (`aes_ni`: SM4's S-box is AES's
//!   between two affine maps), 4 blocks to a register, up to 16 side by side; with VAES the
//!   same on 256-bit registers (`vaes`), 8 blocks to a register, up to 32;
//! - elsewhere as a boolean circuit (`bitsliced`), 64 blocks side by side, or one block with the
//!   four bytes of its round's word as four lanes.
//!
//! The key schedule runs the circuit too, one word at a time.
//!
//! GCM hands its counter blocks over in `ParBlocks` of 16, 32 or 64 and the rest of a message
//! (all of it below 256, 512 or 1,024 bytes) one block at a time, each in its own call. A block
//! alone is encrypted with the counters that follow it (as many as cost no more: 4, 8 or 1), and
//! the next counter of such a run starts a batch (AES-NI: 8, then 16; VAES: 8; bitsliced: 64)
//! that the following blocks are handed out from: a record of a few hundred bytes is a few
//! batches, the unused lanes of the last one computed for nothing. What may vary in time is only
//! whether a block is the counter that follows the previous one: GCM's counter blocks are made of
//! the nonce, which is stored in the clear beside the ciphertext.

#[cfg(target_arch = "x86_64")]
mod aes_ni;
mod bitsliced;
#[cfg(target_arch = "x86_64")]
mod vaes;

use aes_gcm::aes::cipher::consts::{U16, U32, U64};
use aes_gcm::aes::cipher::generic_array::ArrayLength;
use aes_gcm::aes::cipher::inout::InOut;
use aes_gcm::aes::cipher::typenum::Unsigned;
use aes_gcm::aes::cipher::{
    Block, BlockBackend, BlockCipher, BlockClosure, BlockEncrypt, BlockSizeUser, Key, KeyInit,
    KeySizeUser, ParBlocks, ParBlocksSizeUser,
};

/// The linear part of the affine map around SM4's inversion: a circulant matrix whose first row
/// is 0xd3 (the map is x ↦ Ax + 0xd3). Bit i of a byte is the coefficient of xⁱ in SM4's field
/// GF(2)[x]/(x⁸+x⁷+x⁶+x⁵+x⁴+x²+1).
const fn affine_linear(x: u8) -> u8 {
    let (mut out, mut row) = (0u8, 0);
    while row < 8 {
        let bit = ((0xd3u8.rotate_right(row) & x).count_ones() & 1) as u8;
        out |= bit << (7 - row);
        row += 1;
    }
    out
}

const AFFINE_CONSTANT: u8 = 0xd3;

/// Multiplication in GF(2⁸) modulo x⁸ + `reduction` (the modulus without its x⁸ term): SM4's
/// field (0xf5) and AES's (0x1b), for the constants the two implementations compute at compile
/// time and their tests.
const fn gf256_mul(a: u8, b: u8, reduction: u8) -> u8 {
    let (mut a, mut b, mut product) = (a, b, 0u8);
    while b != 0 {
        if b & 1 != 0 {
            product ^= a;
        }
        b >>= 1;
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= reduction;
        }
    }
    product
}

/// The change of basis that sends bit i of `x` to `images[i]` (the powers of a root of SM4's
/// polynomial in another representation of the field).
const fn change_basis(images: &[u8; 8], x: u8) -> u8 {
    let (mut y, mut i) = (0u8, 0);
    while i < 8 {
        if (x >> i) & 1 != 0 {
            y ^= images[i];
        }
        i += 1;
    }
    y
}

/// The inverse of [`change_basis`] with `images`, found by search (at compile time only).
const fn change_basis_back(images: &[u8; 8], y: u8) -> u8 {
    let mut x = 0u8;
    while change_basis(images, x) != y {
        x += 1;
    }
    x
}

/// The key schedule's linear transform L'.
fn linear_key(b: u32) -> u32 {
    b ^ b.rotate_left(13) ^ b.rotate_left(23)
}

const FK: [u32; 4] = [0xa3b1bac6, 0x56aa3350, 0x677d9197, 0xb27022dc];

/// CK: byte j of constant i is (4i + j) · 7 mod 256.
const CK: [u32; 32] = {
    let mut ck = [0u32; 32];
    let mut i = 0;
    while i < 32 {
        let mut word = 0u32;
        let mut j = 0;
        while j < 4 {
            word = (word << 8) | (((4 * i + j) * 7) % 256) as u32;
            j += 1;
        }
        ck[i] = word;
        i += 1;
    }
    ck
};

/// SM4 with its 32 round keys; encryption only, which is all GCM needs.
#[derive(Clone)]
pub struct Sm4 {
    round_keys: [u32; 32],
    #[cfg(target_arch = "x86_64")]
    aes_ni: Option<aes_ni::AesNi>,
    #[cfg(target_arch = "x86_64")]
    vaes: Option<vaes::Vaes>,
}

impl BlockCipher for Sm4 {}

impl BlockSizeUser for Sm4 {
    type BlockSize = U16;
}

impl KeySizeUser for Sm4 {
    type KeySize = U16;
}

impl KeyInit for Sm4 {
    fn new(key: &Key<Self>) -> Self {
        let mut k: [u32; 4] = std::array::from_fn(|i| {
            u32::from_be_bytes(key[4 * i..4 * i + 4].try_into().expect("4 bytes")) ^ FK[i]
        });
        let mut round_keys = [0u32; 32];
        for (i, ck) in CK.iter().enumerate() {
            let next = k[0] ^ linear_key(bitsliced::substitute(k[1] ^ k[2] ^ k[3] ^ ck));
            k = [k[1], k[2], k[3], next];
            round_keys[i] = next;
        }
        Self {
            round_keys,
            #[cfg(target_arch = "x86_64")]
            aes_ni: aes_ni::AesNi::detect(),
            #[cfg(target_arch = "x86_64")]
            vaes: vaes::Vaes::detect(),
        }
    }
}

impl BlockEncrypt for Sm4 {
    fn encrypt_with_backend(&self, f: impl BlockClosure<BlockSize = U16>) {
        #[cfg(target_arch = "x86_64")]
        if let Some(core) = self.vaes {
            return f.call(&mut Encrypting::new(core, &self.round_keys));
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(core) = self.aes_ni {
            return f.call(&mut Encrypting::new(core, &self.round_keys));
        }
        f.call(&mut Encrypting::new(Bitsliced, &self.round_keys))
    }
}

/// A way to encrypt batches of blocks side by side: `Lanes` (GCM's `ParBlocks`), or fewer.
trait Core: Copy {
    type Lanes: ArrayLength<Block<Sm4>>;
    /// The sizes of the batches for a run of counter blocks: the first, then each after the last.
    const FIRST: usize;
    fn next_size(last: usize) -> usize;
    /// `blocks` holds `FIRST`, one of the `next_size`s or `Lanes` blocks.
    fn encrypt(self, round_keys: &[u32; 32], blocks: &mut [[u8; 16]]);
}

/// One block alone (the four bytes of a word as four lanes of the circuit), or 64 side by side,
/// which cost the same as 32 or fewer.
#[derive(Clone, Copy)]
struct Bitsliced;

impl Core for Bitsliced {
    type Lanes = U64;
    const FIRST: usize = 1;

    fn next_size(_: usize) -> usize {
        bitsliced::LANES
    }

    fn encrypt(self, round_keys: &[u32; 32], blocks: &mut [[u8; 16]]) {
        match blocks {
            [block] => *block = bitsliced::encrypt_block(round_keys, block),
            _ => {
                let blocks: &mut [[u8; 16]; bitsliced::LANES] =
                    blocks.try_into().expect("64 blocks");
                *blocks = bitsliced::encrypt_lanes(round_keys, blocks);
            }
        }
    }
}

/// 4 blocks (one register, as fast as one block), 8 or 16 side by side.
#[cfg(target_arch = "x86_64")]
impl Core for aes_ni::AesNi {
    type Lanes = U16;
    const FIRST: usize = 4;

    fn next_size(last: usize) -> usize {
        (2 * last).min(16)
    }

    fn encrypt(self, round_keys: &[u32; 32], blocks: &mut [[u8; 16]]) {
        match blocks.len() {
            4 => self.encrypt_groups::<1>(round_keys, blocks),
            8 => self.encrypt_groups::<2>(round_keys, blocks),
            _ => self.encrypt_groups::<4>(round_keys, blocks),
        }
    }
}

/// 8 blocks (one register, as fast as one block) for a run of counters, 32 (four registers
/// side by side) for GCM's batches. A run grows by 8 at a time: unlike with AES-NI, a second
/// register beside the first costs about half a run of its own, and short records, the common
/// case, rarely use the lanes of a larger batch (`seal_cost` on an Intel Xeon, 2026-12-08).
#[cfg(target_arch = "x86_64")]
impl Core for vaes::Vaes {
    type Lanes = U32;
    const FIRST: usize = 8;

    fn next_size(_: usize) -> usize {
        8
    }

    fn encrypt(self, round_keys: &[u32; 32], blocks: &mut [[u8; 16]]) {
        match blocks.len() {
            8 => self.encrypt_groups::<1>(round_keys, blocks),
            _ => self.encrypt_groups::<4>(round_keys, blocks),
        }
    }
}

const MAX_LANES: usize = 64;

/// The counter block `steps` after `block` in GCM (its last 32 bits, big-endian, wrapping).
fn next_counter(block: &[u8; 16], steps: u32) -> [u8; 16] {
    let mut next = *block;
    let counter = u32::from_be_bytes(block[12..].try_into().unwrap()).wrapping_add(steps);
    next[12..].copy_from_slice(&counter.to_be_bytes());
    next
}

struct Encrypting<'a, C: Core> {
    core: C,
    round_keys: &'a [u32; 32],
    /// The batch being handed out: `blocks[..count]` are the encryptions of the `count` counter
    /// blocks from `first` (the last block that came alone), of which `used` were handed out.
    /// Kept here and encrypted in place, rather than made afresh (and moved) for every batch:
    /// a short record is several batches.
    first: Option<[u8; 16]>,
    blocks: [[u8; 16]; MAX_LANES],
    count: usize,
    used: usize,
}

impl<'a, C: Core> Encrypting<'a, C> {
    fn new(core: C, round_keys: &'a [u32; 32]) -> Self {
        Self {
            core,
            round_keys,
            first: None,
            blocks: [[0u8; 16]; MAX_LANES],
            count: 0,
            used: 0,
        }
    }
}

impl<C: Core> BlockSizeUser for Encrypting<'_, C> {
    type BlockSize = U16;
}

impl<C: Core> ParBlocksSizeUser for Encrypting<'_, C> {
    type ParBlocksSize = C::Lanes;
}

impl<C: Core> BlockBackend for Encrypting<'_, C> {
    fn proc_block(&mut self, mut block: InOut<'_, '_, Block<Self>>) {
        let input: [u8; 16] = block.get_in().as_slice().try_into().unwrap();
        // A block that continues a run of counters is handed out from what was encrypted ahead,
        // or starts the next batch; any other block starts a run. (Counter blocks are made of
        // the nonce, which is stored in the clear: comparing them may take any time.)
        let mut size = C::FIRST;
        if let Some(first) = self.first {
            if input == next_counter(&first, self.used as u32) {
                if self.used < self.count {
                    block.get_out().copy_from_slice(&self.blocks[self.used]);
                    self.used += 1;
                    return;
                }
                size = C::next_size(self.count);
            }
        }
        for (i, counter) in self.blocks[..size].iter_mut().enumerate() {
            *counter = next_counter(&input, i as u32);
        }
        self.core.encrypt(self.round_keys, &mut self.blocks[..size]);
        block.get_out().copy_from_slice(&self.blocks[0]);
        (self.first, self.count, self.used) = (Some(input), size, 1);
    }

    fn proc_par_blocks(&mut self, mut blocks: InOut<'_, '_, ParBlocks<Self>>) {
        let lanes = C::Lanes::USIZE;
        let batch = &mut self.blocks[..lanes];
        for (block, input) in batch.iter_mut().zip(blocks.get_in().iter()) {
            block.copy_from_slice(input);
        }
        let first = batch[0];
        self.core.encrypt(self.round_keys, batch);
        for (out, block) in blocks.get_out().iter_mut().zip(batch.iter()) {
            out.copy_from_slice(block);
        }
        // GCM's last few blocks follow this batch, and go in batches of `Lanes` too.
        (self.first, self.count, self.used) = (Some(first), lanes, lanes);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::aes::cipher::consts::U12;
    use aes_gcm::AesGcm;
    use rand::RngCore;

    /// Multiplication in SM4's field, as the standard defines it.
    pub(crate) fn field_mul(a: u8, b: u8) -> u8 {
        gf256_mul(a, b, 0xf5)
    }

    /// The S-box in algebraic form: S(x) = A(A(x)⁻¹), the inverse x²⁵⁴ (0 for 0).
    pub(crate) fn algebraic_sbox(x: u8) -> u8 {
        let a = affine_linear(x) ^ AFFINE_CONSTANT;
        let mut inverse = 1u8;
        for _ in 0..254 {
            inverse = field_mul(inverse, a);
        }
        affine_linear(inverse) ^ AFFINE_CONSTANT
    }

    #[test]
    fn the_algebraic_sbox_is_the_standards() {
        let first: Vec<u8> = (0..8).map(algebraic_sbox).collect();
        assert_eq!(hex::encode(first), "d690e9fecce13db7");
        assert_eq!(algebraic_sbox(0xff), 0x48);
    }

    /// The cipher with each core this CPU can run: the portable one always.
    fn ciphers(key: &[u8]) -> Vec<(&'static str, Sm4)> {
        let detected = Sm4::new_from_slice(key).unwrap();
        #[allow(unused_mut)]
        let mut ciphers = vec![("bitsliced", detected.clone())];
        #[cfg(target_arch = "x86_64")]
        {
            ciphers[0].1.aes_ni = None;
            ciphers[0].1.vaes = None;
            match detected.aes_ni {
                Some(_) => ciphers.push((
                    "AES-NI",
                    Sm4 {
                        vaes: None,
                        ..detected.clone()
                    },
                )),
                None => eprintln!("no AES-NI on this CPU: that core is not tested"),
            }
            match detected.vaes {
                Some(_) => ciphers.push(("VAES", detected)),
                None => eprintln!("no VAES on this CPU: that core is not tested"),
            }
        }
        ciphers
    }

    /// GB/T 32907-2016 appendix A: one block, and the same block encrypted repeatedly (the
    /// standard's million times takes too long unoptimized: a thousand, against the `sm4`
    /// crate).
    #[test]
    fn reproduces_the_standards_examples() {
        let key = hex::decode("0123456789abcdeffedcba9876543210").unwrap();
        let reference = <sm4::Sm4 as KeyInit>::new_from_slice(&key).unwrap();
        let mut expected = Block::<Sm4>::clone_from_slice(&key);
        for _ in 0..1_000 {
            reference.encrypt_block(&mut expected);
        }
        for (name, cipher) in ciphers(&key) {
            let mut block = Block::<Sm4>::clone_from_slice(&key);
            cipher.encrypt_block(&mut block);
            assert_eq!(
                hex::encode(block),
                "681edf34d206965e86b3e94f536e4246",
                "{name}"
            );
            for _ in 1..1_000 {
                cipher.encrypt_block(&mut block);
            }
            assert_eq!(block, expected, "{name}");
        }
    }

    /// Against the `sm4` crate on random keys: blocks one at a time, whole batches and a tail,
    /// and runs of counter blocks (encrypted ahead) across the 32-bit wrap with a foreign block
    /// in the middle.
    #[test]
    fn agrees_with_the_sm4_crate() {
        let mut rng = rand::thread_rng();
        for _ in 0..10 {
            let mut key = [0u8; 16];
            rng.fill_bytes(&mut key);
            let reference = <sm4::Sm4 as KeyInit>::new_from_slice(&key).unwrap();
            let mut blocks = vec![Block::<Sm4>::default(); 2 * MAX_LANES + 19];
            for block in &mut blocks {
                rng.fill_bytes(block);
            }
            let mut start = [0u8; 16];
            rng.fill_bytes(&mut start);
            start[12..].copy_from_slice(&(u32::MAX - 30).to_be_bytes());
            let mut counters: Vec<Block<Sm4>> = (0..150)
                .map(|i| Block::<Sm4>::clone_from_slice(&next_counter(&start, i)))
                .collect();
            rng.fill_bytes(&mut counters[100]);
            for input in [&blocks[..], &blocks[..1], &counters[..]] {
                let mut expected = input.to_vec();
                reference.encrypt_blocks(&mut expected);
                for (name, cipher) in ciphers(&key) {
                    let mut ours = input.to_vec();
                    cipher.encrypt_blocks(&mut ours);
                    assert_eq!(ours, expected, "{name}, key {}", hex::encode(key));
                }
            }
        }
    }

    /// SM4-GCM through `aes-gcm` against the same built on the `sm4` crate, from no bytes to
    /// several batches.
    #[test]
    fn gcm_agrees_with_gcm_on_the_sm4_crate() {
        let mut rng = rand::thread_rng();
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        let reference = AesGcm::<sm4::Sm4, U12>::new_from_slice(&key).unwrap();
        for (name, cipher) in ciphers(&key) {
            let ours = AesGcm::<Sm4, U12>::from(cipher);
            let lengths = (0..70).chain([100, 255, 256, 400, 1023, 1024, 1025, 4000, 5000]);
            for length in lengths {
                let mut nonce = [0u8; 12];
                rng.fill_bytes(&mut nonce);
                let mut sealed = vec![0u8; length];
                rng.fill_bytes(&mut sealed);
                let mut expected = sealed.clone();
                let tag = ours
                    .encrypt_in_place_detached(&nonce.into(), b"aad", &mut sealed)
                    .unwrap();
                let expected_tag = reference
                    .encrypt_in_place_detached(&nonce.into(), b"aad", &mut expected)
                    .unwrap();
                assert_eq!(
                    (sealed, tag),
                    (expected, expected_tag),
                    "{name}, {length} B"
                );
            }
        }
    }
}
