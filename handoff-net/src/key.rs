//! The cluster key: a 32-byte pre-shared key that closes the network to outsiders.

use std::fmt;
use std::path::{Path, PathBuf};

use libp2p::pnet::PreSharedKey;

/// The environment variable [`ClusterKey::from_default_env`] reads.
pub const CLUSTER_KEY_ENV: &str = "HANDOFF_CLUSTER_KEY";

const KEY_LEN: usize = 32;
const HEADER: &str = "/key/swarm/psk/1.0.0/";
const ENCODING: &str = "/base16/";

/// The pre-shared key of a cluster (libp2p `pnet`): every connection is encrypted with it
/// before Noise runs, so a node without the same key cannot open a connection at all.
///
/// Its text form is the go-ipfs `swarm.key` format, three lines:
///
/// ```text
/// /key/swarm/psk/1.0.0/
/// /base16/
/// <64 hex digits>
/// ```
///
/// [`from_env`](Self::from_env) also accepts the 64 hex digits alone. The key's
/// [`Debug`](fmt::Debug) form shows only its [fingerprint](Self::fingerprint).
///
/// ```
/// use handoff_net::ClusterKey;
/// let key = ClusterKey::generate();
/// let same: ClusterKey = key.to_swarm_key().parse()?;
/// assert_eq!(key.fingerprint(), same.fingerprint());
/// # Ok::<(), handoff_net::KeyFormatError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

/// A short, non-secret digest of a [`ClusterKey`] (the go-libp2p fingerprint, 32 hex
/// digits): compare fingerprints in logs to check that two nodes share a key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyFingerprint(String);

impl KeyFingerprint {
    /// The fingerprint as hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint({})", self.0)
    }
}

/// Why a text is not a cluster key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// The first line is not `/key/swarm/psk/1.0.0/`.
    #[error("not a swarm key: the first line is `{line}`, expected `{HEADER}`")]
    Header {
        /// The first line found.
        line: String,
    },
    /// The second line names an encoding other than `/base16/`.
    #[error("unsupported swarm key encoding `{line}`: only `{ENCODING}` is supported")]
    Encoding {
        /// The second line found.
        line: String,
    },
    /// The text has neither the three lines of a swarm key nor 64 hex digits alone.
    #[error(
        "a cluster key is a swarm key file (three lines) or 64 hex digits; found {lines} line(s)"
    )]
    Shape {
        /// The number of non-empty lines found.
        lines: usize,
    },
    /// The key is not 64 hex digits long.
    #[error("a cluster key has 64 hex digits, found {len} characters")]
    Length {
        /// The number of characters found.
        len: usize,
    },
    /// A character of the key is not a hex digit.
    #[error("a cluster key has only hex digits: `{character}` at position {position}")]
    NotHex {
        /// The offending character.
        character: char,
        /// Its position in the key (0-based).
        position: usize,
    },
}

/// Why a cluster key could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ClusterKeyError {
    /// The key file could not be read or written.
    #[error("cluster key file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("cluster key file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with its text.
        #[source]
        source: KeyFormatError,
    },
    /// The environment variable is not set (or not Unicode).
    #[error("environment variable {var} is not set (or not Unicode)")]
    MissingEnv {
        /// The variable.
        var: String,
    },
    /// The environment variable does not hold a key.
    #[error("environment variable {var}: {source}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with its text.
        #[source]
        source: KeyFormatError,
    },
}

impl ClusterKey {
    /// A fresh random key (from the operating system's generator, through `rand`'s
    /// thread-local CSPRNG).
    pub fn generate() -> Self {
        let mut bytes = [0_u8; KEY_LEN];
        rand::fill(&mut bytes[..]);
        ClusterKey(bytes)
    }

    /// The key with these bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        ClusterKey(bytes)
    }

    /// Reads a `swarm.key` file (the format [`to_file`](Self::to_file) writes; 64 hex
    /// digits alone are accepted too).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ClusterKeyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ClusterKeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        text.parse().map_err(|source| ClusterKeyError::File {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads the key from an environment variable: either the text of a `swarm.key`
    /// file, or the 64 hex digits alone (surrounding whitespace is ignored).
    pub fn from_env(var: &str) -> Result<Self, ClusterKeyError> {
        let text = std::env::var(var).map_err(|_| ClusterKeyError::MissingEnv {
            var: var.to_owned(),
        })?;
        text.parse().map_err(|source| ClusterKeyError::Env {
            var: var.to_owned(),
            source,
        })
    }

    /// [`from_env`](Self::from_env) with [`CLUSTER_KEY_ENV`] (`HANDOFF_CLUSTER_KEY`).
    pub fn from_default_env() -> Result<Self, ClusterKeyError> {
        Self::from_env(CLUSTER_KEY_ENV)
    }

    /// Writes the key as a `swarm.key` file (readable by go-ipfs and by
    /// [`from_file`](Self::from_file)); on Unix the file is created with mode 0600.
    pub fn to_file(&self, path: impl AsRef<Path>) -> Result<(), ClusterKeyError> {
        use std::io::Write;
        let path = path.as_ref();
        let io = |source| ClusterKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        file.write_all(self.to_swarm_key().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// The key in the `swarm.key` text format. This is the secret itself: do not log it.
    pub fn to_swarm_key(&self) -> String {
        format!("{HEADER}\n{ENCODING}\n{}\n", hex(&self.0))
    }

    /// The fingerprint, safe to log.
    pub fn fingerprint(&self) -> KeyFingerprint {
        KeyFingerprint(self.psk().fingerprint().to_string())
    }

    /// The key as libp2p's `PreSharedKey`.
    pub(crate) fn psk(&self) -> PreSharedKey {
        PreSharedKey::new(self.0)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(fingerprint {})", self.fingerprint())
    }
}

impl std::str::FromStr for ClusterKey {
    type Err = KeyFormatError;

    /// Parses the `swarm.key` format (as libp2p's `PreSharedKey::from_str` does), or 64
    /// hex digits alone.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        match lines.as_slice() {
            [hex_digits] => parse_hex(hex_digits).map(ClusterKey),
            [header, encoding, hex_digits] => {
                if *header != HEADER {
                    return Err(KeyFormatError::Header {
                        line: (*header).to_owned(),
                    });
                }
                if *encoding != ENCODING {
                    return Err(KeyFormatError::Encoding {
                        line: (*encoding).to_owned(),
                    });
                }
                parse_hex(hex_digits).map(ClusterKey)
            }
            other => Err(KeyFormatError::Shape { lines: other.len() }),
        }
    }
}

fn parse_hex(s: &str) -> Result<[u8; KEY_LEN], KeyFormatError> {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() != KEY_LEN * 2 {
        return Err(KeyFormatError::Length { len: chars.len() });
    }
    let digit = |position: usize| {
        let character = chars[position];
        character
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or(KeyFormatError::NotHex {
                character,
                position,
            })
    };
    let mut out = [0_u8; KEY_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (digit(2 * i)? << 4) | digit(2 * i + 1)?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// How a node protects its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Security {
    /// Only nodes with this key can connect (pnet before Noise). The normal choice.
    ClusterKey(ClusterKey),
    /// No cluster key: any libp2p node that reaches the listen address can connect (Noise
    /// still encrypts and authenticates each connection). Starting such a node logs a
    /// warning. An insecure node cannot connect to a node that has a key, nor the reverse.
    Insecure,
}

impl Security {
    /// The key, when there is one.
    pub fn key(&self) -> Option<&ClusterKey> {
        match self {
            Security::ClusterKey(key) => Some(key),
            Security::Insecure => None,
        }
    }
}

impl From<ClusterKey> for Security {
    fn from(key: ClusterKey) -> Self {
        Security::ClusterKey(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_key_text_round_trips_and_matches_libp2p() {
        let key = ClusterKey::generate();
        let text = key.to_swarm_key();
        let back: ClusterKey = text.parse().expect("parse");
        assert_eq!(back, key);
        let theirs: PreSharedKey = text.parse().expect("libp2p parses our format");
        assert_eq!(theirs.fingerprint().to_string(), key.fingerprint().as_str());
        assert_eq!(theirs.to_key_file(), text, "same text as go-ipfs/libp2p");
    }

    #[test]
    fn bare_hex_is_accepted() {
        let key = ClusterKey::from_bytes([0xab; 32]);
        let hex_only = "ab".repeat(32);
        assert_eq!(format!("  {hex_only}\n").parse::<ClusterKey>(), Ok(key));
    }

    #[test]
    fn malformed_keys_are_typed_errors() {
        assert_eq!(
            "/key/swarm/psk/2.0.0/\n/base16/\n00".parse::<ClusterKey>(),
            Err(KeyFormatError::Header {
                line: "/key/swarm/psk/2.0.0/".to_owned()
            })
        );
        assert!(matches!(
            format!("{HEADER}\n/base64/\n{}", "00".repeat(32)).parse::<ClusterKey>(),
            Err(KeyFormatError::Encoding { .. })
        ));
        assert_eq!(
            "abc".parse::<ClusterKey>(),
            Err(KeyFormatError::Length { len: 3 })
        );
        let mut bad = "00".repeat(32);
        bad.replace_range(5..6, "z");
        assert_eq!(
            bad.parse::<ClusterKey>(),
            Err(KeyFormatError::NotHex {
                character: 'z',
                position: 5
            })
        );
        assert_eq!(
            "a\nb".parse::<ClusterKey>(),
            Err(KeyFormatError::Shape { lines: 2 })
        );
        let multibyte = "é".repeat(64);
        assert!(matches!(
            multibyte.parse::<ClusterKey>(),
            Err(KeyFormatError::NotHex { position: 0, .. })
        ));
    }

    #[test]
    fn files_round_trip_and_debug_hides_the_key() {
        let dir = std::env::temp_dir().join(format!("handoff-net-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("swarm.key");
        let key = ClusterKey::generate();
        key.to_file(&path).expect("write");
        assert_eq!(ClusterKey::from_file(&path).expect("read"), key);
        let debug = format!("{key:?}");
        assert!(debug.contains(key.fingerprint().as_str()));
        assert!(!debug.contains(&hex(&key.0)));
        std::fs::remove_file(&path).expect("clean up");
        std::fs::remove_dir(&dir).expect("clean up");
        assert!(matches!(
            ClusterKey::from_file(&path),
            Err(ClusterKeyError::Io { .. })
        ));
    }

    #[test]
    fn missing_env_is_a_typed_error() {
        assert!(matches!(
            ClusterKey::from_env("HANDOFF_NET_TEST_SURELY_UNSET_VAR"),
            Err(ClusterKeyError::MissingEnv { .. })
        ));
    }
}
