//! SM4-GCM for data at rest (GB/T 32907 block cipher in GCM mode, RFC 8998), with a key ring so
//! a key can be rotated without losing what older keys sealed. SM4 is `sm4_ct`'s, in constant
//! time: no memory address and no branch depends on the keys or the values.
//!
//! A sealed value is `[id length][key id][12-byte nonce][ciphertext and 16-byte tag]`. The
//! associated data binds a value to where it is stored (its user and message id), so a record
//! copied to another place does not decrypt.

use super::data_dir::DataDir;
use super::sm4_ct::Sm4;
use aes_gcm::aead::{Aead, AeadCore, AeadInPlace, KeyInit, Payload};
use aes_gcm::aes::cipher::consts::U12;
use aes_gcm::AesGcm;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;

type Sm4Gcm = AesGcm<Sm4, U12>;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("sealed with key {0:?}, which is not in store.encryption_keys")]
    UnknownKey(String),
    #[error("sealed value is damaged or was sealed for another place")]
    Damaged,
}

pub struct KeyRing {
    active_id: String,
    keys: HashMap<String, Sm4Gcm>,
}

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
            let cipher = Sm4Gcm::new_from_slice(&bytes).expect("SM4 keys are 16 bytes");
            if keys.insert(id.to_string(), cipher).is_some() {
                bail!("at-rest key id {id:?} appears twice");
            }
            active_id.get_or_insert_with(|| id.to_string());
        }
        let Some(active_id) = active_id else {
            bail!("at least one at-rest key is needed")
        };
        Ok(Self { active_id, keys })
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
        let cipher = &self.keys[&self.active_id];
        // The thread's CSPRNG (ChaCha, seeded and reseeded from the OS): a random nonce without
        // a system call per value.
        let nonce = Sm4Gcm::generate_nonce(&mut rand::thread_rng());
        let header = 1 + self.active_id.len() + NONCE_LEN;
        let mut sealed = Vec::with_capacity(header + plaintext.len() + TAG_LEN);
        sealed.push(self.active_id.len() as u8);
        sealed.extend_from_slice(self.active_id.as_bytes());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = cipher
            .encrypt_in_place_detached(&nonce, aad, &mut sealed[header..])
            .expect("SM4-GCM encryption of an in-memory buffer cannot fail");
        sealed.extend_from_slice(&tag);
        sealed
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        let (&id_len, rest) = sealed.split_first().ok_or(CipherError::Damaged)?;
        let id_len = id_len as usize;
        if rest.len() < id_len + NONCE_LEN {
            return Err(CipherError::Damaged);
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let id = std::str::from_utf8(id).map_err(|_| CipherError::Damaged)?;
        let cipher = self
            .keys
            .get(id)
            .ok_or_else(|| CipherError::UnknownKey(id.to_string()))?;
        cipher
            .decrypt(
                nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| CipherError::Damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
