//! Encryption at rest of endpoint credentials (XChaCha20-Poly1305).
//!
//! The Postgres and Redis queues store each endpoint's signing secrets,
//! extra header values (an `Authorization: Bearer ..` header is a
//! credential), full URLs and mTLS client identity **sealed** under an
//! operator key when the queue has a [`Keyring`]: what sits in the store is
//! the key id, a random 24-byte nonce and the ciphertext, next to the
//! settings that are not secret (masked URLs, scheme, header names,
//! timeouts). The memory queue keeps nothing on disk and is exempt.
//!
//! ```
//! use hookgate_sender::seal::Keyring;
//! // `id:base64(32 bytes)`, newest first: new writes use `k2`, reads accept both.
//! let keys = Keyring::parse(
//!     "k2:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,\
//!      k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
//! )?;
//! assert_eq!(keys.primary_id(), "k2");
//! assert_eq!(keys.ids().collect::<Vec<_>>(), ["k2", "k1"]);
//! assert!(!format!("{keys:?}").contains("AAEC"));
//! # Ok::<(), hookgate_sender::seal::KeyError>(())
//! ```
//!
//! # Keys
//! A key is 32 random bytes, written in base64 (`head -c 32 /dev/urandom |
//! base64`) after an id (`[A-Za-z0-9_.-]`, at most 32 characters) that is
//! stored with every ciphertext. [`Keyring::from_env`] reads
//! `HOOKGATE_ENCRYPTION_KEY` (the list itself) or
//! `HOOKGATE_ENCRYPTION_KEY_FILE` (a file holding it; commas or new lines
//! separate keys, `#` starts a comment line). [`queue::open`](crate::queue::open)
//! applies it; `PostgresQueue::with_keyring` / `RedisQueue::with_keyring`
//! take one explicitly.
//!
//! # Rotation
//! Put the new key first and keep the old one listed: new writes use the
//! new key, records under the old one still read. Then [`rekey`] (or
//! `hookgate endpoint rekey`) rewrites every endpoint under the new key,
//! after which the old key can be dropped from the list.
//!
//! # Security
//! The associated data binds each ciphertext to its endpoint id, its key id
//! and the format version (`hookgate/endpoint/v1`), so a sealed blob copied
//! into another endpoint's record does not decrypt. A record sealed under a
//! key that is not configured, or that does not decrypt, is an error naming
//! the key id ([`SealError`]) — never an empty secret. Records written
//! without a key still load (a warning says they are unencrypted; `rekey`
//! seals them).
// Sealing and opening are used by the durable backends (features `postgres`,
// `redis`); the memory queue stores endpoints as they are.
#![cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]

use std::fmt;

use base64::Engine as _;
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use zeroize::Zeroizing;

use crate::queue::{Queue, QueueError, QueueErrorKind};

/// The environment variable holding the key list.
pub const KEY_ENV: &str = "HOOKGATE_ENCRYPTION_KEY";
/// The environment variable naming a file that holds the key list.
pub const KEY_FILE_ENV: &str = "HOOKGATE_ENCRYPTION_KEY_FILE";

/// Version tag bound into every ciphertext's associated data.
const FORMAT: &str = "hookgate/endpoint/v1";

/// A key list could not be read. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No key in the list.
    #[error("the encryption key list is empty")]
    Empty,
    /// An entry is not `id:base64key`.
    #[error("encryption key entry {position} is not `id:base64key`")]
    Malformed {
        /// 1-based position in the list.
        position: usize,
    },
    /// A key id is empty, too long or has characters outside `[A-Za-z0-9_.-]`.
    #[error("encryption key entry {position}: invalid key id")]
    InvalidId {
        /// 1-based position in the list.
        position: usize,
    },
    /// The same id appears twice.
    #[error("encryption key id {key_id:?} is listed twice")]
    DuplicateId {
        /// The id.
        key_id: String,
    },
    /// The key is not base64.
    #[error("encryption key {key_id:?} is not valid base64")]
    Base64 {
        /// The key's id.
        key_id: String,
    },
    /// The key does not decode to 32 bytes.
    #[error("encryption key {key_id:?} is {len} bytes; it must be 32")]
    Length {
        /// The key's id.
        key_id: String,
        /// Decoded length.
        len: usize,
    },
    /// The key file cannot be read.
    #[error("cannot read the encryption key file {path}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A stored record cannot be opened (or sealed). Names the key id, never
/// key or secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The record is sealed but the queue has no keyring.
    #[error(
        "endpoint {endpoint:?} is encrypted under key {key_id:?} but no encryption key is \
         configured (set {KEY_ENV} or {KEY_FILE_ENV})"
    )]
    NoKeyring {
        /// The endpoint's id.
        endpoint: String,
        /// The key id in the record.
        key_id: String,
    },
    /// The record is sealed under a key id the keyring does not list.
    #[error("endpoint {endpoint:?} is encrypted under key {key_id:?}, which is not configured")]
    UnknownKey {
        /// The endpoint's id.
        endpoint: String,
        /// The key id in the record.
        key_id: String,
    },
    /// Authentication failed: a wrong key under the right id, a damaged
    /// record, or a ciphertext copied from another endpoint.
    #[error(
        "endpoint {endpoint:?}: cannot decrypt with key {key_id:?} (wrong key, damaged record, \
         or a ciphertext that belongs to another endpoint)"
    )]
    Decrypt {
        /// The endpoint's id.
        endpoint: String,
        /// The key id in the record.
        key_id: String,
    },
    /// The sealed part is not in the expected format.
    #[error("endpoint {endpoint:?}: malformed sealed record ({what})")]
    Malformed {
        /// The endpoint's id.
        endpoint: String,
        /// What is wrong.
        what: &'static str,
    },
}

impl From<SealError> for QueueError {
    fn from(e: SealError) -> Self {
        QueueError::new(QueueErrorKind::Encryption, e.to_string()).with_source(e)
    }
}

/// One key.
struct Key {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

/// Operator keys with ids: the first seals, every one opens.
///
/// `Debug` shows only the ids; key bytes are zeroized on drop. No
/// `PartialEq`.
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Keyring {
    /// A keyring of one key (`id`, 32 bytes).
    ///
    /// # Errors
    /// [`KeyError::InvalidId`] for an id outside `[A-Za-z0-9_.-]{1,32}`.
    pub fn new(id: &str, key: [u8; 32]) -> Result<Self, KeyError> {
        if !valid_id(id) {
            return Err(KeyError::InvalidId { position: 1 });
        }
        Ok(Self {
            keys: vec![Key {
                id: id.to_owned(),
                bytes: Zeroizing::new(key),
            }],
        })
    }

    /// Add an older key after the others (it opens records, never seals).
    ///
    /// # Errors
    /// An invalid or duplicate id.
    pub fn with_older_key(mut self, id: &str, key: [u8; 32]) -> Result<Self, KeyError> {
        if !valid_id(id) {
            return Err(KeyError::InvalidId {
                position: self.keys.len() + 1,
            });
        }
        if self.keys.iter().any(|k| k.id == id) {
            return Err(KeyError::DuplicateId {
                key_id: id.to_owned(),
            });
        }
        self.keys.push(Key {
            id: id.to_owned(),
            bytes: Zeroizing::new(key),
        });
        Ok(self)
    }

    /// Parse `id:base64key[,id:base64key...]`, newest first. Entries may
    /// also be separated by new lines; blank lines and lines starting with
    /// `#` are skipped.
    ///
    /// # Errors
    /// A [`KeyError`] naming the entry or key id at fault.
    pub fn parse(spec: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<Key> = Vec::new();
        let entries = spec
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let position = i + 1;
            let (id, b64) = entry
                .split_once(':')
                .ok_or(KeyError::Malformed { position })?;
            let id = id.trim();
            if !valid_id(id) {
                return Err(KeyError::InvalidId { position });
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyError::DuplicateId {
                    key_id: id.to_owned(),
                });
            }
            let decoded = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|_| KeyError::Base64 {
                        key_id: id.to_owned(),
                    })?,
            );
            let bytes: [u8; 32] = decoded
                .as_slice()
                .try_into()
                .map_err(|_| KeyError::Length {
                    key_id: id.to_owned(),
                    len: decoded.len(),
                })?;
            keys.push(Key {
                id: id.to_owned(),
                bytes: Zeroizing::new(bytes),
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// Read the key list from `path` (format of [`parse`](Self::parse)).
    ///
    /// # Errors
    /// The file cannot be read, or its content does not parse.
    pub fn from_file(path: &std::path::Path) -> Result<Self, KeyError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyError::File {
                    path: path.display().to_string(),
                    source,
                })?,
            );
        Self::parse(&text)
    }

    /// The keyring from `HOOKGATE_ENCRYPTION_KEY` (the list) or else
    /// `HOOKGATE_ENCRYPTION_KEY_FILE` (a file holding it); `None` when
    /// neither is set (or both are empty).
    ///
    /// # Errors
    /// A variable is set but its content does not parse.
    pub fn from_env() -> Result<Option<Self>, KeyError> {
        if let Ok(spec) = std::env::var(KEY_ENV) {
            let spec = Zeroizing::new(spec);
            if !spec.trim().is_empty() {
                return Self::parse(&spec).map(Some);
            }
        }
        match std::env::var_os(KEY_FILE_ENV) {
            Some(path) if !path.is_empty() => {
                Self::from_file(std::path::Path::new(&path)).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The id of the key new records are sealed under.
    #[must_use]
    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Every key id, newest first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Seal `plaintext` for endpoint `endpoint` under the primary key.
    pub(crate) fn seal(&self, endpoint: &str, plaintext: &[u8]) -> Sealed {
        let key = &self.keys[0];
        let nonce_bytes: [u8; 24] = rand::random();
        let cipher = XChaCha20Poly1305::new((&*key.bytes).into());
        let aad = aad(&key.id, endpoint);
        // Encryption of an in-memory buffer cannot fail (only a message
        // longer than the cipher's limit could, far beyond any record).
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce_bytes),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        let b64 = base64::engine::general_purpose::STANDARD;
        Sealed {
            key_id: key.id.clone(),
            nonce: b64.encode(nonce_bytes),
            ciphertext: b64.encode(ct),
        }
    }

    /// Open `sealed`, stored with endpoint `endpoint`.
    pub(crate) fn open(
        &self,
        endpoint: &str,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| SealError::UnknownKey {
                endpoint: endpoint.to_owned(),
                key_id: sealed.key_id.clone(),
            })?;
        let malformed = |what| SealError::Malformed {
            endpoint: endpoint.to_owned(),
            what,
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce = b64
            .decode(&sealed.nonce)
            .map_err(|_| malformed("nonce is not base64"))?;
        if nonce.len() != 24 {
            return Err(malformed("nonce is not 24 bytes"));
        }
        let ct = b64
            .decode(&sealed.ciphertext)
            .map_err(|_| malformed("ciphertext is not base64"))?;
        let cipher = XChaCha20Poly1305::new((&*key.bytes).into());
        let aad = aad(&key.id, endpoint);
        cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Decrypt {
                endpoint: endpoint.to_owned(),
                key_id: sealed.key_id.clone(),
            })
    }
}

/// The associated data: format version, key id and endpoint id, NUL-separated.
fn aad(key_id: &str, endpoint: &str) -> String {
    format!("{FORMAT}\0{key_id}\0{endpoint}")
}

/// A sealed blob as stored: key id, nonce and ciphertext (base64).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sealed {
    /// The key's id.
    #[serde(rename = "kid")]
    pub(crate) key_id: String,
    /// 24 bytes, base64.
    pub(crate) nonce: String,
    /// Ciphertext and tag, base64.
    #[serde(rename = "ct")]
    pub(crate) ciphertext: String,
}

/// What [`rekey`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RekeyReport {
    /// Endpoints rewritten (under the queue's newest key).
    pub rewritten: u64,
    /// Their ids.
    pub endpoints: Vec<String>,
}

/// Rewrite every endpoint of `queue` under its newest key (sealing those
/// stored unencrypted), so older keys can be dropped afterwards.
///
/// Each endpoint is read and written back in two store calls: an endpoint
/// changed by someone else in between is overwritten with what was read.
/// Run it while nobody edits endpoints.
///
/// # Errors
/// A record that does not open (its key is not configured, see
/// [`SealError`]) stops the run before anything is written; a queue error.
pub async fn rekey(queue: &dyn Queue) -> Result<RekeyReport, QueueError> {
    // Reading everything first means a missing key fails before any write.
    let endpoints = queue.list_endpoints().await?;
    let mut report = RekeyReport::default();
    for endpoint in &endpoints {
        queue.put_endpoint(endpoint).await?;
        report.rewritten += 1;
        report.endpoints.push(endpoint.id.clone());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    #[test]
    fn parses_key_lists() {
        let ring = Keyring::parse(&format!("{K2}, {K1}")).unwrap();
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["k2", "k1"]);
        let ring = Keyring::parse(&format!("# keys\n{K1}\n\n{K2}\n")).unwrap();
        assert_eq!(ring.primary_id(), "k1");
        assert!(matches!(Keyring::parse(""), Err(KeyError::Empty)));
        assert!(matches!(
            Keyring::parse("nocolon"),
            Err(KeyError::Malformed { position: 1 })
        ));
        assert!(matches!(
            Keyring::parse(&format!("{K1},bad id:AAAA")),
            Err(KeyError::InvalidId { position: 2 })
        ));
        assert!(matches!(
            Keyring::parse(&format!("{K1},{K1}")),
            Err(KeyError::DuplicateId { .. })
        ));
        let err = Keyring::parse("k9:!!!").unwrap_err();
        assert!(matches!(err, KeyError::Base64 { ref key_id } if key_id == "k9"));
        let err = Keyring::parse("k9:AAAA").unwrap_err();
        assert!(matches!(err, KeyError::Length { len: 3, .. }), "{err}");
        assert!(err.to_string().contains("k9"));
    }

    #[test]
    fn seals_and_opens_bound_to_endpoint_and_key() {
        let ring = Keyring::parse(&format!("{K2},{K1}")).unwrap();
        let sealed = ring.seal("orders", b"top secret");
        assert_eq!(sealed.key_id, "k2");
        assert!(!sealed.ciphertext.contains("top secret"));
        assert_eq!(&*ring.open("orders", &sealed).unwrap(), b"top secret");
        // Moved to another endpoint: fails, naming the key.
        let err = ring.open("billing", &sealed).unwrap_err();
        assert!(matches!(err, SealError::Decrypt { ref key_id, .. } if key_id == "k2"));
        // Relabelled under the other key id: fails (the id is bound too).
        let relabelled = Sealed {
            key_id: "k1".into(),
            ..sealed.clone()
        };
        assert!(matches!(
            ring.open("orders", &relabelled),
            Err(SealError::Decrypt { .. })
        ));
        // A keyring without k2 names the missing id.
        let old = Keyring::parse(K1).unwrap();
        let err = old.open("orders", &sealed).unwrap_err();
        assert!(matches!(err, SealError::UnknownKey { ref key_id, .. } if key_id == "k2"));
        assert!(err.to_string().contains("\"k2\""), "{err}");
        // Same id, different key bytes.
        let wrong = Keyring::parse("k2:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        assert!(matches!(
            wrong.open("orders", &sealed),
            Err(SealError::Decrypt { .. })
        ));
        // Fresh nonce per seal.
        assert_ne!(
            ring.seal("orders", b"x").nonce,
            ring.seal("orders", b"x").nonce
        );
    }

    #[test]
    fn debug_shows_only_ids() {
        let ring = Keyring::parse(K1).unwrap();
        let dbg = format!("{ring:?}");
        assert!(dbg.contains("k1") && !dbg.contains("AAEC"), "{dbg}");
    }
}
