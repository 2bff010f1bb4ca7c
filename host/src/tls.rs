//! TLS termination with rustls, on the same port as plaintext.
//!
//! A connection whose first byte is a TLS handshake record is terminated
//! here when a certificate is configured for its SNI name (or a default
//! certificate exists) and the name is not passed through to a module
//! (the proxy's SNI routes). The decrypted bytes then go through the same
//! router as plaintext. Certificates are chosen by SNI: exact names first,
//! then `*.domain` wildcards, then the default. `RELOAD` re-reads them;
//! a bad file keeps the certificates in force.
//!
//! Mutual TLS: with `client_ca`, every terminated handshake (whatever its
//! SNI name) asks the client for a certificate, which rustls' webpki
//! verifier checks against those CAs; `client_auth = "required"` refuses
//! a client without one, `"optional"` (the default) lets it in
//! anonymously. A certificate that is presented must verify either way.
//! Once a handshake completes with a verified certificate, the event loop
//! reads its names with [`identity::names`] and records them for modules
//! (`HostServices::peer_identity`) until the connection closes. The CA
//! file is re-read on `RELOAD` with the certificates, all or nothing.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;

pub mod identity;

/// `[server.tls]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Default certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// Certificates selected by SNI name.
    #[serde(default)]
    pub sni: Vec<SniCert>,
    /// A handshake must complete within this.
    #[serde(default = "default_handshake_ms")]
    pub handshake_timeout_ms: u64,
    /// CA certificates (PEM, one or more) that client certificates must
    /// chain to: setting it turns on mutual TLS for every name served.
    pub client_ca: Option<PathBuf>,
    /// Whether a client must present a certificate; only with
    /// `client_ca`, which makes it [`ClientAuth::Optional`] by default.
    pub client_auth: Option<ClientAuth>,
}

/// `client_auth`: what a client without a certificate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// The handshake completes without one (the connection then has no
    /// identity); a certificate that is presented must still verify.
    Optional,
    /// The handshake fails without a verified certificate.
    Required,
}

fn default_handshake_ms() -> u64 {
    10_000
}

/// `[[server.tls.sni]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SniCert {
    /// Names served with this certificate (exact, or `*.example.com`).
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsSettings {
    /// Whether any certificate is configured.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || !self.sni.is_empty()
    }

    /// What clients must present: `None` without `client_ca`. A
    /// `client_auth` without `client_ca` is an error (it would silently
    /// let every client in), and so are client certificates without any
    /// server certificate (nothing would ask for them).
    pub fn client_auth_mode(&self) -> Result<Option<ClientAuth>, TlsError> {
        match (&self.client_ca, self.client_auth) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(TlsError::ClientAuthWithoutCa),
            (Some(_), _) if !self.enabled() => Err(TlsError::CaWithoutCertificate),
            (Some(_), mode) => Ok(Some(mode.unwrap_or(ClientAuth::Optional))),
        }
    }
}

/// Why the TLS settings or their files were refused; the certificates in
/// force stay. The texts are the operator's: at startup and in `ERR tls:
/// …` replies to `RELOAD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error(
        "[server.tls] client_auth is set but client_ca is not: \
         name the PEM file of the CA certificates that client certificates must \
         chain to"
    )]
    ClientAuthWithoutCa,
    #[error(
        "[server.tls] client_ca needs a server \
         certificate (cert and key, or [[server.tls.sni]] entries)"
    )]
    CaWithoutCertificate,
    #[error("[server.tls] needs both cert and key")]
    HalfPair,
    #[error("[[server.tls.sni]] entry without names")]
    SniWithoutNames,
    /// `what`: "certificate", "private key" or "client_ca".
    #[error("cannot read {what} {}: {reason}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("bad certificate {}: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("no certificate in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("unsupported private key {}: {reason}", path.display())]
    UnsupportedKey { path: PathBuf, reason: String },
    #[error("{} does not match {}: {reason}", key.display(), cert.display())]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        reason: String,
    },
    #[error("bad certificate in client_ca {}: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("no certificate in client_ca {}", path.display())]
    NoCa { path: PathBuf },
    /// Certificate `index` (from 1) of the CA file.
    #[error("client_ca {}: certificate {index} is not a usable CA: {reason}", path.display())]
    UnusableCa {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("client_ca {}: {reason}", path.display())]
    Verifier { path: PathBuf, reason: String },
    /// rustls refused the protocol settings.
    #[error("tls: {0}")]
    Rustls(String),
}

/// Certificates by SNI name.
struct Resolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".example.com", key)` for `*.example.com`.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("names", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcards", &self.wildcard.len())
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl Resolver {
    /// The certificate configured for `name` itself (exact, then a
    /// one-label wildcard); `name` is lowercase.
    fn find_named(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if let Some(k) = self.exact.get(name) {
            return Some(k.clone());
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| {
                name.ends_with(suffix.as_str()) && !name[..name.len() - suffix.len()].contains('.')
            })
            .map(|(_, k)| k.clone())
    }

    fn find(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        name.and_then(|n| self.find_named(&n.to_ascii_lowercase()))
            .or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name())
    }
}

fn load_pair(cert: &Path, key: &Path, base: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_path = base.join(cert);
    let key_path = base.join(key);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| TlsError::Read {
            what: "certificate",
            path: cert_path.clone(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    let key_der = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Read {
        what: "private key",
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let signing =
        ring::sign::any_supported_type(&key_der).map_err(|e| TlsError::UnsupportedKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| TlsError::KeyMismatch {
        key: key_path.clone(),
        cert: cert_path.clone(),
        reason: e.to_string(),
    })?;
    Ok(Arc::new(ck))
}

/// The verifier of client certificates against the CA certificates in
/// `ca` (relative to `base`).
fn client_verifier(
    ca: &Path,
    mode: ClientAuth,
    base: &Path,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let path = base.join(ca);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .map_err(|e| TlsError::Read {
            what: "client_ca",
            path: path.clone(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCa {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCa { path });
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::UnusableCa {
            path: path.clone(),
            index: i + 1,
            reason: e.to_string(),
        })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(ring::default_provider()),
    );
    let builder = match mode {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required => builder,
    };
    builder.build().map_err(|e| TlsError::Verifier {
        reason: e.to_string(),
        path,
    })
}

/// Builds a server config from the settings; paths are relative to `base`
/// (the config file's directory).
fn build(settings: &TlsSettings, base: &Path) -> Result<Terminator, TlsError> {
    // Checked (and the CA file read) first: a bad client_ca is reported
    // even when a certificate is broken too, and never half-applied.
    let verifier = match (settings.client_auth_mode()?, &settings.client_ca) {
        (Some(mode), Some(ca)) => Some(client_verifier(ca, mode, base)?),
        _ => None,
    };
    let default = match (&settings.cert, &settings.key) {
        (Some(c), Some(k)) => Some(load_pair(c, k, base)?),
        (None, None) => None,
        _ => return Err(TlsError::HalfPair),
    };
    let mut exact = HashMap::new();
    let mut wildcard = Vec::new();
    for entry in &settings.sni {
        if entry.names.is_empty() {
            return Err(TlsError::SniWithoutNames);
        }
        let key = load_pair(&entry.cert, &entry.key, base)?;
        for name in &entry.names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => {
                    wildcard.push((suffix.to_string(), key.clone()))
                }
                _ => {
                    exact.insert(name, key.clone());
                }
            }
        }
    }
    let resolver = Arc::new(Resolver {
        exact,
        wildcard,
        default,
    });
    let builder = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    // One config for every name: the client CA applies whichever
    // certificate the SNI name selects.
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Terminator {
        config: Arc::new(config),
        resolver,
    })
}

/// A loaded set of certificates.
struct Terminator {
    config: Arc<ServerConfig>,
    resolver: Arc<Resolver>,
}

/// The TLS state every loop reads: the certificates (swapped on reload)
/// and the SNI names that modules take as they are (passthrough).
#[derive(Default)]
pub struct Tls {
    current: RwLock<Option<Arc<Terminator>>>,
    passthrough: RwLock<HashSet<String>>,
    handshake_timeout_ms: std::sync::atomic::AtomicU64,
}

impl Tls {
    /// Loads the certificates and the client CA; an error leaves the
    /// previous ones in force. Returns how many certificate pairs are in
    /// force.
    pub fn load(&self, settings: &TlsSettings, base: &Path) -> Result<usize, TlsError> {
        settings.client_auth_mode()?;
        let current = if settings.enabled() {
            Some(Arc::new(build(settings, base)?))
        } else {
            None
        };
        self.handshake_timeout_ms.store(
            settings.handshake_timeout_ms.max(1),
            std::sync::atomic::Ordering::Relaxed,
        );
        *self.current.write() = current;
        if let (Some(mode), Some(ca)) = (settings.client_auth_mode()?, &settings.client_ca) {
            log::info!(
                "tls: client certificates {}, checked against {}",
                match mode {
                    ClientAuth::Optional => "optional",
                    ClientAuth::Required => "required",
                },
                base.join(ca).display()
            );
        }
        Ok(settings.sni.len() + usize::from(settings.cert.is_some()))
    }

    /// Replaces the SNI names modules take as they are.
    pub fn set_passthrough(&self, names: HashSet<String>) {
        *self.passthrough.write() = names;
    }

    /// The config to terminate a handshake for `sni` with, or `None` to
    /// leave the connection to the router untouched. A certificate
    /// configured for the name itself wins over a module's passthrough;
    /// passthrough wins over the default certificate.
    pub fn terminate(&self, sni: Option<&str>) -> Option<Arc<ServerConfig>> {
        let t = self.current.read().clone()?;
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            if t.resolver.find_named(&name).is_some() {
                return Some(t.config.clone());
            }
            let pass = self.passthrough.read();
            // Exact names, and `*.parent` wildcards covering one label.
            let wildcard = name
                .split_once('.')
                .is_some_and(|(_, parent)| pass.contains(&format!("*.{parent}")));
            if pass.contains(&name) || wildcard {
                return None;
            }
        }
        t.resolver.default.as_ref().map(|_| t.config.clone())
    }

    /// Whether termination is configured at all.
    pub fn active(&self) -> bool {
        self.current.read().is_some()
    }

    /// How long a handshake may take.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.handshake_timeout_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_text: &str) -> TlsSettings {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn client_auth_needs_client_ca_and_a_certificate() {
        let cert = "cert = \"c.pem\"\nkey = \"k.pem\"\n";
        assert_eq!(settings(cert).client_auth_mode(), Ok(None));
        let s = settings(&format!("{cert}client_ca = \"ca.pem\"\n"));
        assert_eq!(s.client_auth_mode(), Ok(Some(ClientAuth::Optional)));
        let s = settings(&format!(
            "{cert}client_ca = \"ca.pem\"\nclient_auth = \"required\"\n"
        ));
        assert_eq!(s.client_auth_mode(), Ok(Some(ClientAuth::Required)));
        let e = settings(&format!("{cert}client_auth = \"required\"\n"))
            .client_auth_mode()
            .unwrap_err()
            .to_string();
        assert!(e.contains("client_auth is set but client_ca is not"), "{e}");
        let e = settings("client_ca = \"ca.pem\"\n")
            .client_auth_mode()
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a server certificate"), "{e}");
        assert!(toml::from_str::<TlsSettings>("client_auth = \"maybe\"\n").is_err());
    }

    #[test]
    fn a_bad_client_ca_names_its_file_and_keeps_what_is_in_force() {
        let dir = std::env::temp_dir().join(format!("switchyard-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("junk.pem"), "junk\n").unwrap();
        let tls = Tls::default();
        let base = "cert = \"c.pem\"\nkey = \"k.pem\"\n";
        tls.load(&settings(base), &dir).unwrap();
        for (ca, needle) in [
            ("missing.pem", "cannot read client_ca"),
            ("junk.pem", "no certificate in client_ca"),
        ] {
            let s = settings(&format!("{base}client_ca = \"{ca}\"\n"));
            let e = tls.load(&s, &dir).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(ca), "{e}");
            assert!(tls.active(), "a failed load turned TLS off");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
