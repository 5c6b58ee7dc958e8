//! Gateway certificates from a credentials folder, laid out like mounted
//! Kubernetes TLS secrets, watched so a rotated certificate is served
//! without a restart.
//!
//! Place in the flow: before any HTTP, at the TLS handshake of an ingress
//! gateway listener. An Istio Gateway server names its certificate by
//! `tls.credentialName` (a Kubernetes secret in a cluster); out of a cluster
//! the same name is a folder of the credentials directory
//! (`mesh gateway --credentials-dir DIR`):
//!
//! ```text
//! DIR/
//!   api-cert/           <- credentialName: api-cert
//!     tls.crt           PEM certificate chain, leaf first, then intermediates
//!     tls.key           PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC)
//!     ca.crt            (reserved: client CA for MUTUAL servers, not read yet)
//!   other-cert/
//!     tls.crt
//!     tls.key
//! ```
//!
//! This is what `kubectl create secret tls api-cert --cert=... --key=...`
//! stores, and what a secret volume mount looks like (the files may be the
//! symlinks such mounts use). Rotation: replace `tls.crt` and `tls.key`
//! (ideally each by an atomic rename, or the whole folder through a symlink
//! swap as Kubernetes does); the folder is watched recursively and every
//! credential in use is read again after [`DEBOUNCE`] of quiet.
//!
//! Failures are per credential and name the file: a missing `tls.crt`, a
//! file with no PEM certificate, a key that is not a private key or does not
//! match the certificate. A credential that fails on its first load is not
//! served (the gateway logs it and serves its other servers); one that fails
//! on a later reload (a rotation caught half-written, say) keeps serving its
//! last good certificate until the files are fixed.
//!
//! ```
//! use mesh_tls::credentials::{CredentialError, Credentials};
//! let dir = std::env::temp_dir().join("mesh-tls-doc-empty");
//! let creds = Credentials::new(&dir);
//! let err = creds.load("api-cert").unwrap_err();
//! assert!(matches!(err, CredentialError::Missing { .. }));
//! assert!(err.to_string().contains("api-cert/tls.crt"));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{mpsc, watch};

/// The certificate chain file of a credential folder.
pub const CERT_FILE: &str = "tls.crt";
/// The private key file of a credential folder.
pub const KEY_FILE: &str = "tls.key";
/// The client CA file of a credential folder (MUTUAL servers; not read yet).
pub const CA_FILE: &str = "ca.crt";

/// How long the folder must be quiet after a change before credentials are
/// read again: a rotation writes two files, and both must be in place.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why a credential could not be loaded. Every variant names the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The name cannot be a folder of the credentials directory.
    #[error("credential {name:?}: not a credential name (one folder name: no '/', no '..')")]
    InvalidName {
        /// The credential name.
        name: String,
    },
    /// A file of the credential does not exist.
    #[error("credential {name}: {}: file not found", path.display())]
    Missing {
        /// The credential name.
        name: String,
        /// The missing file.
        path: PathBuf,
    },
    /// A file exists but could not be read.
    #[error("credential {name}: {}: cannot read: {message}", path.display())]
    Read {
        /// The credential name.
        name: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The file is not valid PEM.
    #[error("credential {name}: {}: bad PEM: {message}", path.display())]
    BadPem {
        /// The credential name.
        name: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("credential {name}: {}: no PEM CERTIFICATE block", path.display())]
    NoCertificate {
        /// The credential name.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key block.
    #[error(
        "credential {name}: {}: no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        path.display()
    )]
    NoKey {
        /// The credential name.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// The key could not be used (unsupported algorithm, corrupt).
    #[error("credential {name}: {}: unusable private key: {message}", path.display())]
    BadKey {
        /// The credential name.
        name: String,
        /// The file.
        path: PathBuf,
        /// What rustls said.
        message: String,
    },
    /// The leaf certificate could not be parsed or does not belong to the key.
    #[error("credential {name}: {} and {}: {message}", cert.display(), key.display())]
    Mismatch {
        /// The credential name.
        name: String,
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A credentials folder and the provider that loads keys.
#[derive(Clone, Debug)]
pub struct Credentials {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl Credentials {
    /// The credentials folder `dir` (see the module doc for its layout).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Credentials {
            dir: dir.into(),
            provider: crate::provider::provider(),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `tls.crt` and `tls.key` paths of credential `name`.
    pub fn files(&self, name: &str) -> (PathBuf, PathBuf) {
        let folder = self.dir.join(name);
        (folder.join(CERT_FILE), folder.join(KEY_FILE))
    }

    /// Reads credential `name`: its chain and key, checked to belong
    /// together. Blocking file IO (small files); call it off the request
    /// path.
    pub fn load(&self, name: &str) -> Result<Arc<CertifiedKey>, CredentialError> {
        if name.is_empty()
            || name.contains('/')
            || name.contains('\\')
            || name == "."
            || name == ".."
        {
            return Err(CredentialError::InvalidName {
                name: name.to_owned(),
            });
        }
        let (cert_path, key_path) = self.files(name);
        let cert_pem = read(name, &cert_path)?;
        let key_pem = read(name, &key_path)?;
        let bad_pem = |path: &Path, e: pem::Error| CredentialError::BadPem {
            name: name.to_owned(),
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad_pem(&cert_path, e))?;
        if chain.is_empty() {
            return Err(CredentialError::NoCertificate {
                name: name.to_owned(),
                path: cert_path,
            });
        }
        let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(key) => key,
            Err(pem::Error::NoItemsFound) => {
                return Err(CredentialError::NoKey {
                    name: name.to_owned(),
                    path: key_path,
                });
            }
            Err(e) => return Err(bad_pem(&key_path, e)),
        };
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| CredentialError::BadKey {
                name: name.to_owned(),
                path: key_path.clone(),
                message: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(Arc::new(certified))
            }
            Err(e) => Err(CredentialError::Mismatch {
                name: name.to_owned(),
                cert: cert_path,
                key: key_path,
                message: match e {
                    rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                        "the private key does not match the certificate".to_owned()
                    }
                    other => format!("bad certificate: {other}"),
                },
            }),
        }
    }

    /// Watches the folder (recursively) and counts changes on the returned
    /// watcher's channel, after [`DEBOUNCE`] of quiet. Must be called inside
    /// a tokio runtime; fails when the folder does not exist.
    pub fn watch(&self) -> notify::Result<CredentialWatcher> {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !event.kind.is_access()
                {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;
        let (changes, _) = watch::channel(0u64);
        let sender = changes.clone();
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                sender.send_modify(|n| *n += 1);
            }
        });
        Ok(CredentialWatcher {
            _watcher: watcher,
            task,
            changes,
        })
    }
}

fn read(name: &str, path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CredentialError::Missing {
            name: name.to_owned(),
            path: path.to_path_buf(),
        },
        _ => CredentialError::Read {
            name: name.to_owned(),
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}

/// Keeps a credentials folder watched; dropping it stops watching.
pub struct CredentialWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
    changes: watch::Sender<u64>,
}

impl CredentialWatcher {
    /// A receiver that sees the count of (debounced) changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

impl Drop for CredentialWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The credentials in use and what went wrong with the others: each
/// [`refresh`](CredentialCache::refresh) reads every named credential again,
/// keeping the last good certificate of one that now fails.
#[derive(Debug)]
pub struct CredentialCache {
    credentials: Credentials,
    good: HashMap<String, Arc<CertifiedKey>>,
    errors: BTreeMap<String, CredentialError>,
}

impl CredentialCache {
    /// An empty cache over `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        CredentialCache {
            credentials,
            good: HashMap::new(),
            errors: BTreeMap::new(),
        }
    }

    /// The folder.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Reads each of `names` again (blocking file IO). A credential that
    /// loads replaces the previous one; one that fails is logged (once per
    /// distinct error) and keeps its last good certificate, if it had one.
    /// Credentials no longer named are forgotten.
    pub fn refresh<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let mut good = HashMap::new();
        let mut errors = BTreeMap::new();
        for name in names {
            if good.contains_key(name) || errors.contains_key(name) {
                continue;
            }
            match self.credentials.load(name) {
                Ok(key) => {
                    if self.errors.contains_key(name) {
                        tracing::info!(credential = name, "credential loads again");
                    }
                    good.insert(name.to_owned(), key);
                }
                Err(e) => {
                    let previous = self.good.get(name);
                    if self.errors.get(name) != Some(&e) {
                        match previous {
                            Some(_) => {
                                tracing::error!("{e}; keeping the previously loaded certificate")
                            }
                            None => {
                                tracing::error!("{e}; servers using it are not served")
                            }
                        }
                    }
                    if let Some(key) = previous {
                        good.insert(name.to_owned(), Arc::clone(key));
                    }
                    errors.insert(name.to_owned(), e);
                }
            }
        }
        self.good = good;
        self.errors = errors;
    }

    /// The certificate of `name` in use, if it ever loaded.
    pub fn get(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.good.get(name)
    }

    /// Credentials whose last read failed, with the error.
    pub fn errors(&self) -> &BTreeMap<String, CredentialError> {
        &self.errors
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn issue(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, cert: &str, key: &str) {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(CERT_FILE), cert).unwrap();
        std::fs::write(folder.join(KEY_FILE), key).unwrap();
    }

    #[test]
    fn loads_a_secret_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = issue("api.example.com");
        write(dir.path(), "api-cert", &cert, &key);
        let creds = Credentials::new(dir.path());
        let loaded = creds.load("api-cert").unwrap();
        assert_eq!(loaded.cert.len(), 1);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::new(dir.path());
        let (cert, key) = issue("a.example.com");
        let (_, other_key) = issue("b.example.com");

        let e = creds.load("absent").unwrap_err();
        assert!(
            e.to_string().contains("absent/tls.crt: file not found"),
            "{e}"
        );

        write(dir.path(), "no-key", &cert, &key);
        std::fs::remove_file(dir.path().join("no-key").join(KEY_FILE)).unwrap();
        let e = creds.load("no-key").unwrap_err();
        assert!(
            e.to_string().contains("no-key/tls.key: file not found"),
            "{e}"
        );

        write(dir.path(), "not-pem", "hello", &key);
        let e = creds.load("not-pem").unwrap_err();
        assert!(matches!(e, CredentialError::NoCertificate { .. }), "{e}");
        assert!(e.to_string().contains("not-pem/tls.crt"), "{e}");

        write(dir.path(), "cert-as-key", &cert, &cert);
        let e = creds.load("cert-as-key").unwrap_err();
        assert!(matches!(e, CredentialError::NoKey { .. }), "{e}");
        assert!(e.to_string().contains("cert-as-key/tls.key"), "{e}");

        write(dir.path(), "mismatch", &cert, &other_key);
        let e = creds.load("mismatch").unwrap_err();
        assert!(matches!(e, CredentialError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("does not match"), "{e}");

        let e = creds.load("../etc").unwrap_err();
        assert!(matches!(e, CredentialError::InvalidName { .. }), "{e}");
    }

    #[test]
    fn a_failing_reload_keeps_the_last_good_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = issue("api.example.com");
        write(dir.path(), "api-cert", &cert, &key);
        let mut cache = CredentialCache::new(Credentials::new(dir.path()));
        cache.refresh(["api-cert", "missing"]);
        let first = Arc::clone(cache.get("api-cert").unwrap());
        assert!(cache.get("missing").is_none());
        assert!(cache.errors().contains_key("missing"));

        // Half-written rotation: a new key with the old certificate.
        let (_, new_key) = issue("api.example.com");
        write(dir.path(), "api-cert", &cert, &new_key);
        cache.refresh(["api-cert"]);
        assert!(Arc::ptr_eq(cache.get("api-cert").unwrap(), &first));
        assert!(cache.errors().contains_key("api-cert"));
        assert!(!cache.errors().contains_key("missing"));

        let (new_cert, new_key) = issue("api.example.com");
        write(dir.path(), "api-cert", &new_cert, &new_key);
        cache.refresh(["api-cert"]);
        assert!(!Arc::ptr_eq(cache.get("api-cert").unwrap(), &first));
        assert!(cache.errors().is_empty());
    }
}
