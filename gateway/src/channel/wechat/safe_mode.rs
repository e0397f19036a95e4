//! WeChat's safe mode (安全模式): callbacks whose XML is encrypted with the account's
//! EncodingAESKey and signed with its token.
//!
//! The key is the 43-character EncodingAESKey with `=` added, base64-decoded: 32 bytes for
//! AES-256-CBC, whose IV is the key's first 16 bytes. The plaintext is 16 random bytes, the
//! message's length (4 bytes, big-endian), the message, and the appid it is for, padded as
//! PKCS#7 to a multiple of 32 bytes. `msg_signature` is the SHA-1 of the token, `timestamp`,
//! `nonce` and the ciphertext (base64), sorted and joined, in lowercase hex.

use super::callback::CallbackRefusal;
use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::Engine;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

type Decryptor = cbc::Decryptor<aes::Aes256>;
type Encryptor = cbc::Encryptor<aes::Aes256>;

/// WeChat pads to this many bytes, not to the AES block.
const PAD_BLOCK: usize = 32;

/// Opens safe-mode callbacks for the configured apps.
pub struct SafeMode {
    key: [u8; 32],
    appids: Vec<String>,
}

/// `msg_signature`: SHA-1 of the four, sorted and joined.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypted: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypted];
    parts.sort_unstable();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

impl SafeMode {
    /// For the EncodingAESKey `encoding_aes_key` (checked by the configuration) and the appids
    /// a callback may be for.
    pub fn new(encoding_aes_key: &str, appids: Vec<String>) -> anyhow::Result<Self> {
        // WeChat's keys are 43 random characters, so the last one may carry bits past the 32
        // bytes: decoders in WeChat's own samples ignore them, and so must this one.
        let lenient = GeneralPurpose::new(
            &alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let key = lenient
            .decode(format!("{encoding_aes_key}="))
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                anyhow::anyhow!("channels.wechat.encoding_aes_key is not 32 bytes in base64")
            })?;
        Ok(Self { key, appids })
    }

    /// The XML inside `encrypted` (the body's `Encrypt`), once `signature` is WeChat's over it
    /// with `token`, it decrypts and it is for one of the apps.
    pub fn open(
        &self,
        token: &str,
        (timestamp, nonce): (&str, &str),
        signature: &str,
        encrypted: &str,
    ) -> Result<String, CallbackRefusal> {
        let expected = msg_signature(token, timestamp, nonce, encrypted);
        let signed = expected
            .as_bytes()
            .ct_eq(signature.to_ascii_lowercase().as_bytes());
        if !bool::from(signed) {
            return Err(CallbackRefusal::BadSignature);
        }
        let sealed = STANDARD
            .decode(encrypted)
            .map_err(|_| CallbackRefusal::Undecryptable)?;
        if sealed.is_empty() || sealed.len() % PAD_BLOCK != 0 {
            return Err(CallbackRefusal::Undecryptable);
        }
        let plain = Decryptor::new(&self.key.into(), self.key[..16].into())
            .decrypt_padded_vec_mut::<NoPadding>(&sealed)
            .map_err(|_| CallbackRefusal::Undecryptable)?;
        let pad = *plain.last().ok_or(CallbackRefusal::Undecryptable)? as usize;
        if !(1..=PAD_BLOCK).contains(&pad) || pad > plain.len() {
            return Err(CallbackRefusal::Undecryptable);
        }
        let plain = &plain[..plain.len() - pad];
        let length = plain
            .get(16..20)
            .map(|bytes| u32::from_be_bytes(bytes.try_into().expect("4 bytes")) as usize)
            .ok_or(CallbackRefusal::Undecryptable)?;
        let message = plain
            .get(20..20 + length)
            .ok_or(CallbackRefusal::Undecryptable)?;
        let appid = &plain[20 + length..];
        if !self.appids.iter().any(|id| id.as_bytes() == appid) {
            return Err(CallbackRefusal::ForeignApp);
        }
        String::from_utf8(message.to_vec()).map_err(|_| CallbackRefusal::Undecryptable)
    }

    /// What WeChat would post for `message` to `appid`: the `Encrypt` text (base64), with the
    /// 16 random bytes given. For the tests and the WeChat test double.
    pub fn seal(&self, message: &str, appid: &str, random: [u8; 16]) -> String {
        let mut plain = random.to_vec();
        plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
        plain.extend_from_slice(message.as_bytes());
        plain.extend_from_slice(appid.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let sealed = Encryptor::new(&self.key.into(), self.key[..16].into())
            .encrypt_padded_vec_mut::<NoPadding>(&plain);
        STANDARD.encode(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const TOKEN: &str = "token";

    fn safe_mode() -> SafeMode {
        SafeMode::new(KEY, vec!["wx-app".into()]).unwrap()
    }

    #[test]
    fn a_sealed_and_signed_callback_opens_to_its_xml() {
        let mode = safe_mode();
        let xml = "<xml><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event></xml>";
        let encrypted = mode.seal(xml, "wx-app", [7; 16]);
        let signature = msg_signature(TOKEN, "1700000000", "42", &encrypted);
        let opened = mode.open(TOKEN, ("1700000000", "42"), &signature, &encrypted);
        assert_eq!(opened.as_deref(), Ok(xml));
    }

    #[test]
    fn a_forged_damaged_or_foreign_callback_is_refused() {
        let mode = safe_mode();
        let encrypted = mode.seal("<xml/>", "wx-app", [1; 16]);
        let at = ("1700000000", "42");
        let signature = msg_signature(TOKEN, at.0, at.1, &encrypted);
        assert_eq!(
            mode.open("other", at, &signature, &encrypted),
            Err(CallbackRefusal::BadSignature)
        );
        let foreign = mode.seal("<xml/>", "wx-other", [1; 16]);
        let signed = msg_signature(TOKEN, at.0, at.1, &foreign);
        assert_eq!(
            mode.open(TOKEN, at, &signed, &foreign),
            Err(CallbackRefusal::ForeignApp)
        );
        let stranger = SafeMode::new("Z".repeat(43).as_str(), vec!["wx-app".into()]).unwrap();
        let theirs = stranger.seal("<xml/>", "wx-app", [1; 16]);
        let signed = msg_signature(TOKEN, at.0, at.1, &theirs);
        assert!(
            mode.open(TOKEN, at, &signed, &theirs).is_err(),
            "another key"
        );
        for junk in ["", "not base64!", "AAAA"] {
            let signed = msg_signature(TOKEN, at.0, at.1, junk);
            assert_eq!(
                mode.open(TOKEN, at, &signed, junk),
                Err(CallbackRefusal::Undecryptable)
            );
        }
    }
}
