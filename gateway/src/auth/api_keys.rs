//! The backend's API keys: the HTTP API's bearer keys, and the MQTT password of a trusted
//! backend client.

use sha2::Digest;
use subtle::{ConditionallySelectable, ConstantTimeEq};

pub struct ApiKeys(Vec<String>);

impl ApiKeys {
    pub fn new(keys: Vec<String>) -> Self {
        Self(keys)
    }

    /// Whether `presented` is one of the keys. Every key is compared in constant time, so the
    /// response time does not reveal how much of a key matched, nor which key.
    pub fn contains(&self, presented: &str) -> bool {
        self.position(presented).is_some()
    }

    /// Which key `presented` is, by its place in the configuration (each has its own rate
    /// limit), found in constant time as [`contains`](Self::contains) says.
    pub fn position(&self, presented: &str) -> Option<usize> {
        let mut found = u64::MAX;
        for (index, key) in self.0.iter().enumerate() {
            let matches = key.as_bytes().ct_eq(presented.as_bytes());
            found.conditional_assign(&(index as u64), matches);
        }
        (found != u64::MAX).then_some(found as usize)
    }

    /// How many keys there are.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// What names the key at `index` where the key must not be shown (a rate-limit bucket kept
    /// in Redis): the first 64 bits of its SHA-256, the same on every node.
    pub fn fingerprint(&self, index: usize) -> String {
        let digest = sha2::Sha256::digest(self.0[index].as_bytes());
        hex::encode(&digest[..8])
    }

    /// The first key: what `gateway api-key` prints.
    pub fn first(&self) -> &str {
        &self.0[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_keys_match() {
        let keys = ApiKeys::new(vec!["abc".into(), "xyz".into()]);
        assert!(keys.contains("abc"));
        assert!(keys.contains("xyz"));
        assert!(!keys.contains("abd"));
        assert!(!keys.contains("abcd"));
        assert!(!keys.contains("ab"));
        assert!(!keys.contains(""));
        assert_eq!(keys.position("xyz"), Some(1));
        assert_eq!(keys.position("xy"), None);
    }
}
