//! `REDIS_ENCRYPTION_KEY`: authenticated encryption (AES-256-GCM, `ring`) of the worker
//! credentials avto keeps in Redis.
//!
//! What is sealed: worker records (`{p}w:info:{id}`: the registration as the worker sent it,
//! whose metadata may carry the worker's own credentials, e.g. API keys) and STS token
//! bindings (`{p}sts:{kind}:{sha256}`: which worker a short-lived token authenticates). Each
//! value is bound to its key (associated data), so a sealed value copied under another key does
//! not open. Tokens themselves are never stored, only their SHA-256.
//!
//! Key format: 32 random bytes as 64 hex characters (`openssl rand -hex 32`); anything else is
//! refused at start-up. Rotation: set the new key as `REDIS_ENCRYPTION_KEY` and the old one(s)
//! in `REDIS_ENCRYPTION_KEY_PREVIOUS` (comma-separated): values sealed with an old key are still
//! read, every write uses the new key. Worker records are re-sealed when the worker registers
//! again or sends a heartbeat with a body; STS tokens expire (refresh tokens after 24 h), so an
//! old key can be dropped once every worker re-registered and a day passed. A value that no
//! configured key opens (or a plain value while a key is set, e.g. written before encryption
//! was switched on) counts as absent: the worker must register again, the STS token is refused.

use sha2::{Digest, Sha256};

/// A key setting that cannot be used (the message names the variable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// One 256-bit key and its id (the first 4 bytes of a SHA-256 over it, as hex), which sealed
/// values carry so the right key is found among the current and previous ones.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey {
    bytes: [u8; 32],
    id: String,
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionKey({}, redacted)", self.id)
    }
}

impl EncryptionKey {
    /// Parses 64 hex characters (surrounding whitespace ignored); `var` names the variable in errors.
    pub fn parse(var: &str, text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let malformed = |why: &str| {
            KeyError(format!(
                "{var}: {why}; expected 32 random bytes as 64 hex characters (e.g. `openssl rand -hex 32`)"
            ))
        };
        if text.len() != 64 {
            return Err(malformed(&format!("{} characters", text.len())));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| malformed("not hexadecimal"))?;
        if bytes.iter().all(|b| *b == bytes[0]) {
            return Err(malformed("not random (every byte is the same)"));
        }
        let digest = Sha256::new().chain_update(b"avto REDIS_ENCRYPTION_KEY id\0").chain_update(bytes).finalize();
        Ok(EncryptionKey { bytes, id: hex::encode(&digest[..4]) })
    }

    /// The key id stored with every value sealed with this key.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// `REDIS_ENCRYPTION_KEY` and `REDIS_ENCRYPTION_KEY_PREVIOUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionKeys {
    /// Seals every write, opens values sealed with it.
    pub current: EncryptionKey,
    /// Only open values (rotation).
    pub previous: Vec<EncryptionKey>,
}

impl EncryptionKeys {
    /// Reads the two variables; `None` when `REDIS_ENCRYPTION_KEY` is unset or empty.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, KeyError> {
        let value = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let Some(current) = value("REDIS_ENCRYPTION_KEY") else {
            if value("REDIS_ENCRYPTION_KEY_PREVIOUS").is_some() {
                return Err(KeyError(
                    "REDIS_ENCRYPTION_KEY_PREVIOUS is set without REDIS_ENCRYPTION_KEY (old keys only open values; \
                     set the current key too)"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let current = EncryptionKey::parse("REDIS_ENCRYPTION_KEY", &current)?;
        let previous = match value("REDIS_ENCRYPTION_KEY_PREVIOUS") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .filter(|k| !k.trim().is_empty())
                .map(|k| EncryptionKey::parse("REDIS_ENCRYPTION_KEY_PREVIOUS", k))
                .collect::<Result<_, _>>()?,
        };
        Ok(Some(EncryptionKeys { current, previous }))
    }
}

#[cfg(feature = "redis")]
pub use self::cipher::{OpenError, RecordCipher};

#[cfg(feature = "redis")]
mod cipher {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
    use ring::rand::{SecureRandom, SystemRandom};

    use super::EncryptionKeys;

    /// The prefix of a sealed value: `avtoenc1:{key id}:{hex(nonce | ciphertext | tag)}`.
    const PREFIX: &str = "avtoenc1:";

    /// Why a stored value could not be opened.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[non_exhaustive]
    pub enum OpenError {
        #[error("the value is not encrypted (written before REDIS_ENCRYPTION_KEY was set?)")]
        NotSealed,
        #[error("the value is encrypted with key {0}, which is neither REDIS_ENCRYPTION_KEY nor in REDIS_ENCRYPTION_KEY_PREVIOUS")]
        UnknownKey(String),
        #[error("the value does not decrypt (tampered with, or moved from another key)")]
        Invalid,
    }

    /// Seals and opens values with [`EncryptionKeys`].
    pub struct RecordCipher {
        keys: Vec<(String, LessSafeKey)>,
        rng: SystemRandom,
    }

    impl std::fmt::Debug for RecordCipher {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RecordCipher").field("keys", &self.keys.iter().map(|k| &k.0).collect::<Vec<_>>()).finish()
        }
    }

    impl RecordCipher {
        pub fn new(keys: &EncryptionKeys) -> Self {
            let keys = std::iter::once(&keys.current)
                .chain(&keys.previous)
                .map(|k| {
                    let key = UnboundKey::new(&AES_256_GCM, &k.bytes).expect("a 32-byte key is an AES-256 key");
                    (k.id.clone(), LessSafeKey::new(key))
                })
                .collect();
            RecordCipher { keys, rng: SystemRandom::new() }
        }

        /// Encrypts `plain` with the current key; `context` (the Redis key without its prefix)
        /// must be given again to open it.
        pub fn seal(&self, plain: &[u8], context: &str) -> String {
            let (id, key) = &self.keys[0];
            let mut nonce = [0u8; NONCE_LEN];
            self.rng.fill(&mut nonce).expect("the system random number generator works");
            let mut buf = plain.to_vec();
            key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut buf)
                .expect("AES-GCM seals any value shorter than 64 GiB");
            let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&buf);
            format!("{PREFIX}{id}:{}", hex::encode(out))
        }

        /// Decrypts a value written by [`RecordCipher::seal`] with the same `context`, under
        /// the current key or a previous one.
        pub fn open(&self, stored: &str, context: &str) -> Result<Vec<u8>, OpenError> {
            let rest = stored.strip_prefix(PREFIX).ok_or(OpenError::NotSealed)?;
            let (id, data) = rest.split_once(':').ok_or(OpenError::Invalid)?;
            let (_, key) =
                self.keys.iter().find(|(k, _)| k == id).ok_or_else(|| OpenError::UnknownKey(id.to_owned()))?;
            let mut data = hex::decode(data).map_err(|_| OpenError::Invalid)?;
            if data.len() < NONCE_LEN {
                return Err(OpenError::Invalid);
            }
            let mut sealed = data.split_off(NONCE_LEN);
            let nonce = Nonce::try_assume_unique_for_key(&data).map_err(|_| OpenError::Invalid)?;
            let plain =
                key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut sealed).map_err(|_| OpenError::Invalid)?;
            Ok(plain.to_vec())
        }

        /// Whether `stored` looks sealed (by any key).
        pub fn is_sealed(stored: &str) -> bool {
            stored.starts_with(PREFIX)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::storage::encryption::EncryptionKey;

        fn key(c: char) -> EncryptionKey {
            let text: String = std::iter::repeat_n(c, 63).chain(['0']).collect();
            EncryptionKey::parse("K", &text).unwrap()
        }

        #[test]
        fn seals_opens_rotates_and_binds_the_context() {
            let old = RecordCipher::new(&EncryptionKeys { current: key('a'), previous: vec![] });
            let sealed = old.seal(b"{\"api_key\":\"sk-1\"}", "w:info:w1");
            assert!(!sealed.contains("sk-1") && RecordCipher::is_sealed(&sealed), "{sealed}");
            assert_ne!(sealed, old.seal(b"{\"api_key\":\"sk-1\"}", "w:info:w1"), "a fresh nonce every time");
            assert_eq!(old.open(&sealed, "w:info:w1").unwrap(), b"{\"api_key\":\"sk-1\"}");
            assert_eq!(old.open(&sealed, "w:info:w2"), Err(OpenError::Invalid), "bound to its key");
            let mut tampered = sealed.clone();
            tampered.replace_range(tampered.len() - 2.., if sealed.ends_with("00") { "01" } else { "00" });
            assert_eq!(old.open(&tampered, "w:info:w1"), Err(OpenError::Invalid));
            assert_eq!(old.open("{\"plain\":1}", "w:info:w1"), Err(OpenError::NotSealed));

            let rotated = RecordCipher::new(&EncryptionKeys { current: key('b'), previous: vec![key('a')] });
            assert_eq!(rotated.open(&sealed, "w:info:w1").unwrap(), b"{\"api_key\":\"sk-1\"}", "old values open");
            let resealed = rotated.seal(b"x", "c");
            assert!(resealed.contains(key('b').id()), "writes use the new key");
            assert_eq!(old.open(&resealed, "c"), Err(OpenError::UnknownKey(key('b').id().to_owned())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(vars: &[(&str, &str)]) -> Result<Option<EncryptionKeys>, KeyError> {
        EncryptionKeys::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        assert_eq!(keys(&[]).unwrap(), None);
        let k = keys(&[("REDIS_ENCRYPTION_KEY", good)]).unwrap().unwrap();
        assert!(k.previous.is_empty());
        assert!(!format!("{k:?}").contains("aabbcc"), "Debug does not show the key: {k:?}");
        for bad in ["secret", &good[..62], &format!("{good}00"), &good.replace('a', "g"), &"7".repeat(64)] {
            let err = keys(&[("REDIS_ENCRYPTION_KEY", bad)]).unwrap_err().to_string();
            assert!(err.contains("REDIS_ENCRYPTION_KEY") && err.contains("64 hex characters"), "{bad}: {err}");
        }
        let err = keys(&[("REDIS_ENCRYPTION_KEY", good), ("REDIS_ENCRYPTION_KEY_PREVIOUS", &format!("{good},xyz"))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("REDIS_ENCRYPTION_KEY_PREVIOUS"), "{err}");
        assert!(keys(&[("REDIS_ENCRYPTION_KEY_PREVIOUS", good)]).is_err(), "old keys without a current one");
        let two =
            keys(&[("REDIS_ENCRYPTION_KEY", good), ("REDIS_ENCRYPTION_KEY_PREVIOUS", &format!("{good}, {good}"))]);
        assert_eq!(two.unwrap().unwrap().previous.len(), 2);
    }
}
