//! The backend's API keys: the HTTP API's bearer keys, and the MQTT password of a trusted
//! backend client.

use subtle::ConstantTimeEq;

pub struct ApiKeys(Vec<String>);

impl ApiKeys {
    pub fn new(keys: Vec<String>) -> Self {
        Self(keys)
    }

    /// Whether `presented` is one of the keys. Every key is compared in constant time, so the
    /// response time does not reveal how much of a key matched, nor which key.
    pub fn contains(&self, presented: &str) -> bool {
        self.0.iter().fold(false, |found, key| {
            found | bool::from(key.as_bytes().ct_eq(presented.as_bytes()))
        })
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
    }
}
