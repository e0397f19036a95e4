//! SM4-GCM for data at rest (GB/T 32907 block cipher in GCM mode, RFC 8998), with a key ring so
//! a key can be rotated without losing what older keys sealed. SM4 is `sm4_ct`'s, in constant
//! time: no memory address and no branch depends on the keys or the values.
//!
//! A sealed value is `[id length][key id][12-byte nonce][ciphertext and 16-byte tag]`. The
//! associated data binds a value to where it is stored (its user and message id), so a record
//! copied to another place does not decrypt.
//!
//! Nonces are random (96 bits), which GCM allows for at most 2³² values under one key; a busy
//! gateway seals that many in hours. So no configured key seals directly: each hour's values are
//! sealed under a key derived from it for that hour (HMAC-SHA256 of the key over the hour's
//! number), named `{key id}.{hour}` in the value. An hour of even a million seals a second is
//! 2^31.7, under the bound. Values sealed directly with a configured key (named by its id alone,
//! before hourly keys) still open.

use super::data_dir::DataDir;
use super::sm4_ct::Sm4;
use super::time::unix_seconds;
use aes_gcm::aead::{AeadCore, AeadInPlace, KeyInit};
use aes_gcm::aes::cipher::consts::U12;
use aes_gcm::AesGcm;
use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

pub(super) type Sm4Gcm = AesGcm<Sm4, U12>;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("sealed with key {0:?}, which is not in store.encryption_keys")]
    UnknownKey(String),
    #[error("sealed value is damaged or was sealed for another place")]
    Damaged,
    /// Sealed under a user's data key that is no longer the user's: destroyed when the user
    /// was deleted (see [`super::data_key`]).
    #[error("sealed under a data key that was destroyed")]
    Shredded,
}

pub struct KeyRing {
    active_id: String,
    /// The configured keys, by id: what the hourly keys derive from, and what values sealed
    /// before hourly keys were sealed with.
    keys: HashMap<String, ConfiguredKey>,
    /// The hourly key this ring seals with now.
    sealing: RwLock<Arc<HourlyKey>>,
    /// Hourly keys derived to open values, by their name; cleared when it holds
    /// [`MAX_DERIVED`].
    derived: Mutex<HashMap<String, Arc<Sm4Gcm>>>,
}

struct ConfiguredKey {
    secret: [u8; 16],
    cipher: Arc<Sm4Gcm>,
}

/// An hour's sealing key, with the name sealed values give it (`{key id}.{hour}`).
pub(super) struct HourlyKey {
    pub hour: u64,
    pub name: String,
    pub cipher: Arc<Sm4Gcm>,
}

impl HourlyKey {
    /// The key of `hour` derived from `secret`, named `{id}.{hour}`.
    pub(super) fn derive(id: &str, secret: &[u8; 16], hour: u64) -> Self {
        Self {
            hour,
            name: format!("{id}.{hour}"),
            cipher: Arc::new(hourly(secret, hour)),
        }
    }

    pub(super) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        seal_named(&self.name, &self.cipher, plaintext, aad)
    }
}

/// The hour of now, in hours since the Unix epoch: what sealing keys are derived for.
pub(super) fn this_hour() -> u64 {
    unix_seconds() / SECONDS_PER_HOUR
}

/// The SM4-GCM key for `hour` (hours since the Unix epoch) derived from `secret`.
fn hourly(secret: &[u8; 16], hour: u64) -> Sm4Gcm {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(b"gw sm4-gcm hourly key\0");
    mac.update(&hour.to_be_bytes());
    Sm4Gcm::new_from_slice(&mac.finalize().into_bytes()[..16]).expect("16 bytes")
}

/// Seals `plaintext` under `cipher`, naming its key `name` in the value.
fn seal_named(name: &str, cipher: &Sm4Gcm, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    // The thread's CSPRNG (ChaCha, seeded and reseeded from the OS): a random nonce without a
    // system call per value.
    let nonce = Sm4Gcm::generate_nonce(&mut rand::thread_rng());
    let header = 1 + name.len() + NONCE_LEN;
    let mut sealed = Vec::with_capacity(header + plaintext.len() + TAG_LEN);
    sealed.push(name.len() as u8);
    sealed.extend_from_slice(name.as_bytes());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(&nonce, aad, &mut sealed[header..])
        .expect("SM4-GCM encryption of an in-memory buffer cannot fail");
    sealed.extend_from_slice(&tag);
    sealed
}

/// A sealed value's key name, and the rest: nonce, ciphertext and tag.
pub(super) fn key_name(sealed: &[u8]) -> Result<(&str, &[u8]), CipherError> {
    let (&name_len, rest) = sealed.split_first().ok_or(CipherError::Damaged)?;
    let (name, rest) = rest
        .split_at_checked(usize::from(name_len))
        .ok_or(CipherError::Damaged)?;
    let name = std::str::from_utf8(name).map_err(|_| CipherError::Damaged)?;
    Ok((name, rest))
}

/// Opens the nonce, ciphertext and tag `rest` of a value under `cipher`, appending the
/// plaintext to `out` (which is left as it was when the value does not open): a reader builds
/// what it hands on around the plaintext without a copy of its own.
pub(super) fn open_with(
    cipher: &Sm4Gcm,
    rest: &[u8],
    aad: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CipherError> {
    let (nonce, sealed) = rest
        .split_at_checked(NONCE_LEN)
        .ok_or(CipherError::Damaged)?;
    let (ciphertext, tag) = sealed
        .split_at_checked(
            sealed
                .len()
                .checked_sub(TAG_LEN)
                .ok_or(CipherError::Damaged)?,
        )
        .ok_or(CipherError::Damaged)?;
    let start = out.len();
    out.extend_from_slice(ciphertext);
    let opened = cipher.decrypt_in_place_detached(nonce.into(), aad, &mut out[start..], tag.into());
    opened.map_err(|_| {
        out.truncate(start);
        CipherError::Damaged
    })
}

/// Hourly keys kept for opening at most: a key schedule is cheap to redo.
const MAX_DERIVED: usize = 4096;

const SECONDS_PER_HOUR: u64 = 3600;

impl KeyRing {
    /// Builds the ring from `"id:32 hex digits"` entries; the first one seals.
    pub fn new(entries: &[String]) -> Result<Self> {
        let mut keys = HashMap::new();
        let mut active_id = None;
        for entry in entries {
            let Some((id, digits)) = entry.split_once(':') else {
                bail!("at-rest key {entry:?} is not \"id:hex\"");
            };
            anyhow::ensure!(
                broker_config::is_at_rest_key(entry),
                "at-rest key {id:?} must be an id of 1-16 letters or digits and 32 hex digits"
            );
            let bytes = hex::decode(digits).with_context(|| format!("at-rest key {id:?}"))?;
            let secret: [u8; 16] = bytes.try_into().expect("checked: 32 hex digits");
            let cipher = Arc::new(Sm4Gcm::new_from_slice(&secret).expect("SM4 keys are 16 bytes"));
            if keys
                .insert(id.to_string(), ConfiguredKey { secret, cipher })
                .is_some()
            {
                bail!("at-rest key id {id:?} appears twice");
            }
            active_id.get_or_insert_with(|| id.to_string());
        }
        let Some(active_id) = active_id else {
            bail!("at least one at-rest key is needed")
        };
        let sealing = HourlyKey::derive(&active_id, &keys[&active_id].secret, this_hour());
        Ok(Self {
            active_id,
            keys,
            sealing: RwLock::new(Arc::new(sealing)),
            derived: Mutex::new(HashMap::new()),
        })
    }

    /// The key to seal with in `hour`, derived when the hour changed.
    fn sealing_key(&self, hour: u64) -> Arc<HourlyKey> {
        {
            let sealing = self.sealing.read().unwrap_or_else(|p| p.into_inner());
            if sealing.hour == hour {
                return sealing.clone();
            }
        }
        let key = Arc::new(HourlyKey::derive(
            &self.active_id,
            &self.keys[&self.active_id].secret,
            hour,
        ));
        *self.sealing.write().unwrap_or_else(|p| p.into_inner()) = key.clone();
        key
    }

    /// The cipher of a sealed value's key name: a configured key's hourly key
    /// (`{id}.{hour}`), or a configured key itself (a value from before hourly keys).
    fn opening_key(&self, name: &str) -> Result<Arc<Sm4Gcm>, CipherError> {
        let unknown = || CipherError::UnknownKey(name.to_string());
        let Some((id, hour)) = name.split_once('.') else {
            let key = self.keys.get(name).ok_or_else(unknown)?;
            return Ok(key.cipher.clone());
        };
        let hour: u64 = hour.parse().map_err(|_| CipherError::Damaged)?;
        let key = self
            .keys
            .get(id)
            .ok_or_else(|| CipherError::UnknownKey(id.to_string()))?;
        let mut derived = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cipher) = derived.get(name) {
            return Ok(cipher.clone());
        }
        if derived.len() >= MAX_DERIVED {
            derived.clear();
        }
        let cipher = Arc::new(hourly(&key.secret, hour));
        derived.insert(name.to_string(), cipher.clone());
        Ok(cipher)
    }

    /// The keys of `store.encryption_keys` when any are configured, else one generated once
    /// into the data dir (as key id `d0`), so a gateway without configuration still seals.
    pub fn configured_or_generated(configured: &[String], data: &DataDir) -> Result<Self> {
        if configured.is_empty() {
            let generated = data.secret("at_rest_key")?;
            Self::new(&[format!("d0:{}", &generated[..32])])
        } else {
            Self::new(configured)
        }
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        self.seal_in(this_hour(), plaintext, aad)
    }

    /// Seals under the hourly key of `hour`.
    fn seal_in(&self, hour: u64, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        self.sealing_key(hour).seal(plaintext, aad)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        let mut plaintext = Vec::new();
        self.open_into(sealed, aad, &mut plaintext)?;
        Ok(plaintext)
    }

    /// Opens `sealed` as [`open`](Self::open) does, appending the plaintext to `out`.
    pub fn open_into(
        &self,
        sealed: &[u8],
        aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        let (name, rest) = key_name(sealed)?;
        open_with(&*self.opening_key(name)?, rest, aad, out)
    }

    /// Whether `sealed` was sealed under the key that seals now (or an hour's key of it): a
    /// value sealed under an older key is to be sealed again before that key is removed.
    pub fn seals_with_active_key(&self, sealed: &[u8]) -> bool {
        key_name(sealed).is_ok_and(|(name, _)| {
            name.split_once('.').map_or(name, |(id, _)| id) == self.active_id
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::{Aead, Payload};

    /// RFC 8998 appendix A.1: SM4-GCM with a 12-byte IV.
    #[test]
    fn reproduces_the_rfc_8998_test_vector() {
        let key = hex::decode("0123456789ABCDEFFEDCBA9876543210").unwrap();
        let iv = hex::decode("00001234567800000000ABCD").unwrap();
        let aad = hex::decode("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2").unwrap();
        let plaintext = hex::decode(concat!(
            "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD",
            "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
        ))
        .unwrap();
        let expected = hex::decode(concat!(
            "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735",
            "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D",
            "83DE3541E4C2B58177E065A9BF7B62EC"
        ))
        .unwrap();
        let cipher = Sm4Gcm::new_from_slice(&key).unwrap();
        let sealed = cipher
            .encrypt(
                iv.as_slice().into(),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(sealed, expected);
    }

    #[test]
    fn each_hour_seals_under_a_key_of_its_own_and_every_hour_opens() {
        let ring = KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".into()]).unwrap();
        let (now, later) = (493_000, 493_001);
        let first = ring.seal_in(now, b"hello", b"alice/m1");
        let second = ring.seal_in(later, b"hello", b"alice/m1");
        let name = |sealed: &[u8]| String::from_utf8(sealed[1..1 + sealed[0] as usize].to_vec());
        assert_eq!(name(&first).unwrap(), "k1.493000");
        assert_eq!(name(&second).unwrap(), "k1.493001");
        // The same plaintext under two keys: nothing in common past the header.
        assert_ne!(
            first[1 + first[0] as usize..],
            second[1 + second[0] as usize..]
        );
        for sealed in [&first, &second] {
            assert_eq!(ring.open(sealed, b"alice/m1").unwrap(), b"hello");
        }
        // A value sealed under another hour's key and relabelled does not open.
        let mut relabelled = second.clone();
        let end = 1 + relabelled[0] as usize;
        relabelled[1..end].copy_from_slice(b"k1.493000");
        assert!(matches!(
            ring.open(&relabelled, b"alice/m1"),
            Err(CipherError::Damaged)
        ));
    }

    /// Values sealed before hourly keys (directly with a configured key, named by its id) still
    /// open.
    #[test]
    fn values_from_before_hourly_keys_open() {
        let ring = KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".into()]).unwrap();
        let nonce = [7u8; NONCE_LEN];
        let cipher = &ring.keys["k1"].cipher;
        let ciphertext = cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: b"old",
                    aad: b"alice/m0",
                },
            )
            .unwrap();
        let sealed = [&[2u8][..], b"k1", &nonce, &ciphertext].concat();
        assert_eq!(ring.open(&sealed, b"alice/m0").unwrap(), b"old");
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let old = KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".into()]).unwrap();
        let sealed = old.seal(b"hello", b"alice/m1");
        let rotated = KeyRing::new(&[
            "k2:f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff".into(),
            "k1:000102030405060708090a0b0c0d0e0f".into(),
        ])
        .unwrap();
        assert_eq!(rotated.open(&sealed, b"alice/m1").unwrap(), b"hello");
        let resealed = rotated.seal(b"hello", b"alice/m1");
        assert!(matches!(
            old.open(&resealed, b"alice/m1"),
            Err(CipherError::UnknownKey(id)) if id == "k2"
        ));
        assert!(matches!(
            rotated.open(&sealed, b"bob/m1"),
            Err(CipherError::Damaged)
        ));
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
    }

    #[test]
    fn opening_into_a_buffer_appends_or_leaves_it_as_it_was() {
        let ring = KeyRing::new(&["k1:000102030405060708090a0b0c0d0e0f".into()]).unwrap();
        let sealed = ring.seal(b"hello", b"alice/m1");
        let mut out = b"head:".to_vec();
        ring.open_into(&sealed, b"alice/m1", &mut out).unwrap();
        assert_eq!(out, b"head:hello");
        let refused = ring.open_into(&sealed, b"bob/m1", &mut out);
        assert!(matches!(refused, Err(CipherError::Damaged)));
        assert_eq!(out, b"head:hello");
        let truncated = &sealed[..sealed.len() - 20];
        assert!(ring.open_into(truncated, b"alice/m1", &mut out).is_err());
        assert_eq!(out, b"head:hello");
    }
}
