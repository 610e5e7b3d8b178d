//! TLS set-up, the file work of it (PROTOCOL 1.6): the server's certificate (given, or
//! self-signed once and kept in the server's data folder) and the client's certificate check
//! (the system's roots for a real certificate; a self-signed one pinned on first use in a
//! known-hosts file, as SSH does). The core gets ready rustls configurations; it encrypts and
//! decrypts, and never reads a file or a clock for it.
//!
//! The crypto provider is `ring` (see the workspace manifest for why).

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use natter_core::chat::password::Password;
use natter_core::driver::client::ClientTls;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The file names of the self-signed certificate and its key in the server's data folder.
pub const CERT_FILE: &str = "tls-cert.pem";
/// See [`CERT_FILE`].
pub const KEY_FILE: &str = "tls-key.pem";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot make a self-signed certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0:?} is not a server name or address")]
    ServerName(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TlsSetupError + '_ {
    move |source| TlsSetupError::Io { path: path.to_owned(), source }
}

/// The SHA-256 digest of a certificate (its DER bytes): what is pinned and printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of `cert` (DER).
    pub fn of(cert: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert);
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// `sha256:` and 64 hex digits; the prefix and `:` between bytes (as openssl prints them)
    /// are optional.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a SHA-256 fingerprint (sha256: and 64 hex digits)");
        let hex: String = s
            .trim()
            .trim_start_matches("sha256:")
            .trim_start_matches("SHA256:")
            .chars()
            .filter(|&c| c != ':')
            .collect();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------- server

/// Where the server's certificate comes from.
#[derive(Debug, Clone)]
pub struct ServerTlsOptions {
    /// The TLS listener's address.
    pub addr: std::net::SocketAddr,
    /// A real certificate chain (PEM) and its key; both or neither.
    pub cert: Option<PathBuf>,
    /// See `cert`.
    pub key: Option<PathBuf>,
    /// Without them, a self-signed certificate is made once and kept here.
    pub data_dir: PathBuf,
}

/// A server's TLS configuration, ready for the driver, and its certificate's fingerprint.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// For the server driver.
    pub config: Arc<rustls::ServerConfig>,
    /// Of the certificate it presents (printed at start: clients pin it).
    pub fingerprint: Fingerprint,
}

/// Loads the certificate of `options` (making the self-signed one when there is none yet).
pub fn server_tls(options: &ServerTlsOptions) -> Result<ServerTls, TlsSetupError> {
    let (cert, key) = match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => self_signed(&options.data_dir)?,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .map_err(|_| TlsSetupError::Pem { path: cert.clone(), what: "certificate" })?
        .collect::<Result<_, _>>()
        .map_err(|_| TlsSetupError::Pem { path: cert.clone(), what: "certificate" })?;
    let first =
        chain.first().ok_or(TlsSetupError::Pem { path: cert.clone(), what: "certificate" })?;
    let fingerprint = Fingerprint::of(first);
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|_| TlsSetupError::Pem { path: key.clone(), what: "private key" })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(ServerTls { config: Arc::new(config), fingerprint })
}

/// The self-signed certificate and key in `data_dir`, made now if they are not there.
fn self_signed(data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsSetupError> {
    let (cert, key) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    write_private(&key, made.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&cert, made.cert.pem()).map_err(io_err(&cert))?;
    tracing::info!("made a self-signed TLS certificate in {}", data_dir.display());
    Ok((cert, key))
}

/// Writes a file only its owner may read (a private key).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsSetupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))
}

// ---------------------------------------------------------------- client

/// How a client checks the server (PROTOCOL 1.6).
#[derive(Debug, Clone)]
pub struct ClientTlsOptions {
    /// The server's name as its certificate shows it (a host name or an IP address).
    pub server_name: String,
    /// The known-hosts file: one `host:port sha256:...` line per pinned server.
    pub known_hosts: PathBuf,
    /// Trust exactly this certificate (and nothing else), whatever the known-hosts file says.
    pub fingerprint: Option<Fingerprint>,
    /// The room password, sent after the handshake before the name.
    pub password: Option<Password>,
}

/// The known-hosts file's default place: `~/.natter/known_hosts` (`.natter/known_hosts` here
/// when there is no home).
pub fn default_known_hosts() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from(".natter"), |home| PathBuf::from(home).join(".natter"))
        .join("known_hosts")
}

/// A first-use pin waiting to be written to the known-hosts file once the handshake saw it.
#[derive(Debug)]
pub struct Pinning {
    known_hosts: PathBuf,
    host: String,
    first_use: Mutex<Option<Fingerprint>>,
}

impl Pinning {
    /// Writes a certificate seen for the first time to the known-hosts file; gives what to tell
    /// the person.
    pub fn save_first_use(&self) -> Option<String> {
        let fingerprint = self.first_use.lock().ok()?.take()?;
        let line = format!("{} {fingerprint}\n", self.host);
        let saved = (|| {
            if let Some(dir) = self.known_hosts.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut file =
                std::fs::OpenOptions::new().create(true).append(true).open(&self.known_hosts)?;
            file.write_all(line.as_bytes())
        })();
        Some(match saved {
            Ok(()) => format!(
                "first connection to {}: its self-signed certificate {fingerprint} is now pinned \
                 in {}",
                self.host,
                self.known_hosts.display()
            ),
            Err(err) => format!(
                "cannot pin {}'s certificate {fingerprint} in {}: {err}",
                self.host,
                self.known_hosts.display()
            ),
        })
    }
}

/// The pin the known-hosts file holds for `host`, and on which line.
fn known_pin(path: &Path, host: &str) -> Result<Option<(Fingerprint, usize)>, TlsSetupError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TlsSetupError::Io { path: path.to_owned(), source }),
    };
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() == Some(host)
            && let Some(Ok(fingerprint)) = words.next().map(str::parse)
        {
            return Ok(Some((fingerprint, i + 1)));
        }
    }
    Ok(None)
}

/// The client side's TLS for a server at `addr`: the rustls configuration with the pinning
/// verifier, and the pin to save after a first use.
pub fn client_tls(
    addr: std::net::SocketAddr,
    options: &ClientTlsOptions,
) -> Result<(ClientTls, Arc<Pinning>), TlsSetupError> {
    let host = format!("{}:{}", options.server_name, addr.port());
    let known = known_pin(&options.known_hosts, &host)?;
    let pinning = Arc::new(Pinning {
        known_hosts: options.known_hosts.clone(),
        host: host.clone(),
        first_use: Mutex::new(None),
    });
    let provider = provider();
    let verifier = PinningVerifier {
        roots: system_roots(&provider),
        algorithms: provider.signature_verification_algorithms,
        explicit: options.fingerprint,
        known: known.map(|(fingerprint, line)| (fingerprint, options.known_hosts.clone(), line)),
        pinning: pinning.clone(),
        host,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let server_name = ServerName::try_from(options.server_name.clone())
        .map_err(|_| TlsSetupError::ServerName(options.server_name.clone()))?;
    Ok((ClientTls { config: Arc::new(config), server_name }, pinning))
}

/// The verifier for real certificates: the system's roots, when it has any.
fn system_roots(provider: &Arc<CryptoProvider>) -> Option<Arc<WebPkiServerVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return None;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().ok()
}

/// A refused certificate, with what to do about it.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refuse(text: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(Refused(text)),
    )))
}

/// Real certificates against the system's roots; otherwise the pinned fingerprint, and a first
/// use pinned (SSH's trust on first use). The signatures of the handshake are checked as always.
#[derive(Debug)]
struct PinningVerifier {
    roots: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
    explicit: Option<Fingerprint>,
    known: Option<(Fingerprint, PathBuf, usize)>,
    pinning: Arc<Pinning>,
    host: String,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(end_entity);
        if let Some(wanted) = self.explicit {
            return if seen == wanted {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(refuse(format!(
                    "the server {} presented certificate {seen}, not the {wanted} you gave with \
                     --fingerprint; not connecting",
                    self.host
                )))
            };
        }
        if let Some(roots) = &self.roots
            && roots
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .is_ok()
        {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.known {
            Some((wanted, _, _)) if *wanted == seen => Ok(ServerCertVerified::assertion()),
            Some((wanted, path, line)) => Err(refuse(format!(
                "\n\
                 @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                 @  WARNING: THE SERVER'S CERTIFICATE HAS CHANGED!          @\n\
                 @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                 Someone may be listening in on this connection, or the server's certificate \
                 was replaced.\n\
                 {host} was pinned as {wanted}\n\
                 and now presents   {seen}.\n\
                 Not connecting. If you know the change is genuine, remove line {line} of {path} \
                 and connect again, or connect with --fingerprint {seen}.",
                host = self.host,
                path = path.display(),
            ))),
            None => {
                if let Ok(mut first) = self.pinning.first_use.lock() {
                    *first = Some(seen);
                }
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // PROTOCOL 1.6: fingerprints print and parse back, with or without openssl's colons.
    #[test]
    fn fingerprints_round_trip() {
        let fp = Fingerprint::of(b"a certificate");
        let text = fp.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 64, "{text}");
        assert_eq!(text.parse::<Fingerprint>(), Ok(fp));
        let hex = &text[7..];
        let colons: Vec<&str> = (0..32).map(|i| &hex[2 * i..2 * i + 2]).collect();
        assert_eq!(colons.join(":").to_uppercase().parse::<Fingerprint>(), Ok(fp));
        assert!("sha256:abcd".parse::<Fingerprint>().is_err());
    }
}
