//! Data keys: a key of its own for each owner of sealed values, kept only wrapped (sealed under
//! the configured key ring), so that destroying the wrapped key makes every value sealed under
//! it unreadable wherever copies of those values survive (crypto-shredding), and rotating the
//! ring re-wraps the data keys without touching the values.
//!
//! A data key seals like a configured key does: under a key derived from it for each hour (see
//! [`super::cipher`]), named `~{key id}.{hour}` in the value. The `~` keeps the names apart
//! from configured keys' (letters and digits), so a value tells which ring opens it; the key id
//! is random, so an owner deleted and created again gets a key that opens none of the old
//! values.
//!
//! A wrapped data key is `[id length][id][the secret sealed under the ring]`, the secret bound
//! to its owner and id.

use super::cipher::{key_name, open_with, this_hour, CipherError, HourlyKey, KeyRing};
use rand::RngCore;
use std::sync::{Arc, Mutex, RwLock};

/// What starts the names of values sealed under data keys.
const DATA_KEY_MARK: char = '~';

pub struct DataKey {
    id: String,
    secret: [u8; 16],
    /// The hourly key this data key seals with now.
    sealing: RwLock<Arc<HourlyKey>>,
    /// The hourly key last opened with: the values of a page were mostly sealed in one hour.
    opening: Mutex<Option<Arc<HourlyKey>>>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id).finish()
    }
}

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut secret = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut secret);
        Self::with(hex::encode(rand::random::<[u8; 6]>()), secret)
    }

    fn with(id: String, secret: [u8; 16]) -> Self {
        let sealing = HourlyKey::derive(&Self::name_of(&id), &secret, this_hour());
        Self {
            id,
            secret,
            sealing: RwLock::new(Arc::new(sealing)),
            opening: Mutex::new(None),
        }
    }

    fn name_of(id: &str) -> String {
        format!("{DATA_KEY_MARK}{id}")
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let hour = this_hour();
        let current = self
            .sealing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let key = match current.hour == hour {
            true => current,
            false => {
                let key = Arc::new(HourlyKey::derive(
                    &Self::name_of(&self.id),
                    &self.secret,
                    hour,
                ));
                *self.sealing.write().unwrap_or_else(|p| p.into_inner()) = key.clone();
                key
            }
        };
        key.seal(plaintext, aad)
    }

    /// Opens a value sealed under this key, appending its plaintext to `out` (a reader builds
    /// what it hands on around it); [`CipherError::Shredded`] for one sealed under another data
    /// key (its owner's key before a deletion).
    pub fn open_into(
        &self,
        sealed: &[u8],
        aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        let (name, rest) = key_name(sealed)?;
        let (id, hour) = name
            .strip_prefix(DATA_KEY_MARK)
            .and_then(|name| name.split_once('.'))
            .ok_or(CipherError::Damaged)?;
        if id != self.id {
            return Err(CipherError::Shredded);
        }
        let hour: u64 = hour.parse().map_err(|_| CipherError::Damaged)?;
        let key = {
            let mut opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
            match &*opening {
                Some(key) if key.hour == hour => key.clone(),
                _ => opening
                    .insert(Arc::new(HourlyKey::derive(
                        &Self::name_of(&self.id),
                        &self.secret,
                        hour,
                    )))
                    .clone(),
            }
        };
        open_with(&key.cipher, rest, aad, out)
    }

    /// The key sealed under `ring` for `owner`: what is stored.
    pub fn wrap(&self, ring: &KeyRing, owner: &str) -> Vec<u8> {
        let mut wrapped = vec![self.id.len() as u8];
        wrapped.extend_from_slice(self.id.as_bytes());
        wrapped.extend_from_slice(&ring.seal(&self.secret, &wrapping_aad(owner, &self.id)));
        wrapped
    }

    /// The key `wrap` made for `owner`.
    pub fn unwrap(ring: &KeyRing, owner: &str, wrapped: &[u8]) -> Result<Self, CipherError> {
        let (id, sealed) = split_wrapped(wrapped)?;
        let secret = ring.open(sealed, &wrapping_aad(owner, id))?;
        let secret: [u8; 16] = secret.try_into().map_err(|_| CipherError::Damaged)?;
        Ok(Self::with(id.to_string(), secret))
    }

    /// Whether a wrapped key is wrapped under the ring's sealing key: one wrapped under an
    /// older key is wrapped again before that key is removed.
    pub fn is_wrapped_under_active_key(ring: &KeyRing, wrapped: &[u8]) -> bool {
        split_wrapped(wrapped).is_ok_and(|(_, sealed)| ring.seals_with_active_key(sealed))
    }
}

/// Whether a sealed value was sealed under a data key rather than a configured key.
pub fn is_sealed_under_a_data_key(sealed: &[u8]) -> bool {
    key_name(sealed).is_ok_and(|(name, _)| name.starts_with(DATA_KEY_MARK))
}

/// A wrapped key's id, and its secret as sealed.
fn split_wrapped(wrapped: &[u8]) -> Result<(&str, &[u8]), CipherError> {
    key_name(wrapped)
}

fn wrapping_aad(owner: &str, id: &str) -> Vec<u8> {
    [b"data key\0", owner.as_bytes(), b"\0", id.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&str]) -> KeyRing {
        KeyRing::new(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()).unwrap()
    }

    const K1: &str = "k1:000102030405060708090a0b0c0d0e0f";
    const K2: &str = "k2:f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

    impl DataKey {
        /// The plaintext alone, as the tests open it.
        fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
            let mut plaintext = Vec::new();
            self.open_into(sealed, aad, &mut plaintext)?;
            Ok(plaintext)
        }
    }

    #[test]
    fn a_wrapped_key_opens_what_it_sealed_and_nothing_of_another_key() {
        let ring = ring(&[K1]);
        let key = DataKey::generate();
        let sealed = key.seal(b"hello", b"alice/m1");
        assert!(is_sealed_under_a_data_key(&sealed));
        assert!(!is_sealed_under_a_data_key(
            &ring.seal(b"hello", b"alice/m1")
        ));
        assert!(!sealed.windows(5).any(|w| w == b"hello"));

        let wrapped = key.wrap(&ring, "alice");
        assert!(!wrapped.windows(16).any(|w| w == key.secret));
        let unwrapped = DataKey::unwrap(&ring, "alice", &wrapped).unwrap();
        assert_eq!(unwrapped.open(&sealed, b"alice/m1").unwrap(), b"hello");
        // Bound to its owner: another user's copy of it does not unwrap.
        assert!(DataKey::unwrap(&ring, "bob", &wrapped).is_err());
        // The owner's next key (after a deletion) opens nothing the old one sealed.
        assert!(matches!(
            DataKey::generate().open(&sealed, b"alice/m1"),
            Err(CipherError::Shredded)
        ));
        assert!(matches!(
            unwrapped.open(&sealed, b"alice/m2"),
            Err(CipherError::Damaged)
        ));
    }

    #[test]
    fn rotating_the_ring_rewraps_keys_and_the_values_still_open() {
        let old = ring(&[K1]);
        let key = DataKey::generate();
        let sealed = key.seal(b"hello", b"alice/m1");
        let wrapped = key.wrap(&old, "alice");
        assert!(DataKey::is_wrapped_under_active_key(&old, &wrapped));

        let rotated = ring(&[K2, K1]);
        assert!(!DataKey::is_wrapped_under_active_key(&rotated, &wrapped));
        let rewrapped = DataKey::unwrap(&rotated, "alice", &wrapped)
            .unwrap()
            .wrap(&rotated, "alice");
        assert!(DataKey::is_wrapped_under_active_key(&rotated, &rewrapped));
        // Once every key is rewrapped, the old ring key can go.
        let without_k1 = ring(&[K2]);
        let reopened = DataKey::unwrap(&without_k1, "alice", &rewrapped).unwrap();
        assert_eq!(reopened.open(&sealed, b"alice/m1").unwrap(), b"hello");
        assert!(DataKey::unwrap(&without_k1, "alice", &wrapped).is_err());
    }
}
