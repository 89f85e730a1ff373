//! The HTTPS listener (feature `tls`, `TLS_ENABLED=true`): the server certificate and key from
//! `TLS_CERT_PATH` / `TLS_KEY_PATH`, and client certificates checked against `TLS_CA_PATH`
//! (required with `TLS_REQUIRE_CLIENT_CERT=true`, else optional). The subject CN of a verified
//! client certificate reaches the worker routes as [`ClientCertCn`]; with `WORKER_AUTH_MODE`
//! `mixed` or `mtls-only` it is the worker's identity.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::config::TlsConfig;
use super::ClientCertCn;

/// How long a client has for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS acceptor for `cfg`; errors name the file that is wrong.
pub(super) fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("TLS_CERT_PATH {}: {e}", cfg.cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("TLS_CERT_PATH {}: no certificate in the file", cfg.cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_path)
        .map_err(|e| format!("TLS_KEY_PATH {}: {e}", cfg.key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &cfg.ca_path {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("TLS_CA_PATH {}: {e}", ca.display()))? {
                let c = c.map_err(|e| format!("TLS_CA_PATH {}: {e}", ca.display()))?;
                roots.add(c).map_err(|e| format!("TLS_CA_PATH {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("TLS_CA_PATH {}: no certificate in the file", ca.display()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match cfg.require_client_cert {
                true => verifier.build(),
                false => verifier.allow_unauthenticated().build(),
            }
            .map_err(|e| format!("TLS_CA_PATH {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| format!("TLS_CERT_PATH/TLS_KEY_PATH: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS handshake of the listener ([`super::listener`]): at most 10 s, and the CN of a
/// verified client certificate.
#[derive(Clone)]
pub(crate) struct Tls(pub TlsAcceptor);

impl super::listener::Handshake for Tls {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    const PLAIN: bool = false;
    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Option<(Self::Io, ClientCertCn)> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.0.accept(tcp)).await {
            Ok(Ok(tls)) => {
                let cn = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| subject_cn(c));
                Some((tls, ClientCertCn(cn)))
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => None,
        }
    }
}

/// The subject CN of a DER certificate (the first commonName attribute), read with a minimal DER
/// walk: Certificate → tbsCertificate → subject → RDNs → attribute 2.5.4.3.
pub(super) fn subject_cn(der: &[u8]) -> Option<String> {
    let (cert, _) = tlv(der, 0x30)?;
    let (tbs, _) = tlv(cert, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = any(rest)?.1; // [0] version
    }
    for _ in 0..4 {
        rest = any(rest)?.1; // serial, signature algorithm, issuer, validity
    }
    let (mut rdns, _) = tlv(rest, 0x30)?;
    while !rdns.is_empty() {
        let (mut set, next) = tlv(rdns, 0x31)?;
        rdns = next;
        while !set.is_empty() {
            let (atv, next) = tlv(set, 0x30)?;
            set = next;
            let (oid, value) = tlv(atv, 0x06)?;
            if oid == [0x55, 0x04, 0x03] {
                let (tag, content, _) = element(value)?;
                // UTF8String, PrintableString, IA5String, TeletexString
                return matches!(tag, 0x0c | 0x13 | 0x16 | 0x14).then(|| String::from_utf8(content.to_vec()).ok())?;
            }
        }
    }
    None
}

/// One DER element: (tag, contents, what follows).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (n as usize, rest),
        0x81..=0x84 => {
            let bytes = (first & 0x7f) as usize;
            let (len_bytes, rest) = (rest.get(..bytes)?, rest.get(bytes..)?);
            (len_bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), rest)
        }
        _ => return None,
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// An element with `tag`: (contents, what follows).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = element(input)?;
    (t == tag).then_some((content, rest))
}

/// Any element: (contents, what follows).
fn any(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, content, rest) = element(input)?;
    Some((content, rest))
}
