//! TLS to stores, with the modes PostgreSQL's clients know: `disable`,
//! `prefer` and `require` (encrypted, certificate not checked: protects
//! against eavesdropping only), `verifyCA` (signed by the given CA) and
//! `verifyFull` (signed by the CA and issued for the host).

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::{WebPkiServerVerifier, danger},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

use super::ScrubError;
use crate::api::TlsMode;

/// How a driver secures its connection.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub mode: Option<TlsMode>,
    /// The CA certificate(s), PEM, for the verifying modes.
    pub ca_pem: Option<String>,
}

impl TlsOptions {
    pub fn mode(&self) -> TlsMode {
        self.mode.unwrap_or(TlsMode::Disable)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate: `prefer` and `require` encrypt without checking who answers.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verifyCA`: the chain must lead to the CA; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The rustls client configuration for a mode (not for `disable`).
pub fn client_config(opts: &TlsOptions) -> Result<rustls::ClientConfig, ScrubError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ScrubError::Config(format!("tls: {e}")))?;
    let verifier: Arc<dyn danger::ServerCertVerifier> = match opts.mode() {
        TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => Arc::new(AnyCertificate(provider())),
        mode @ (TlsMode::VerifyCA | TlsMode::VerifyFull) => {
            let pem = opts
                .ca_pem
                .as_deref()
                .ok_or_else(|| ScrubError::Config("tls: verifyCA and verifyFull need the CA certificate".into()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| ScrubError::Config(format!("tls: CA certificate: {e}")))?;
                roots.add(cert).map_err(|e| ScrubError::Config(format!("tls: CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(ScrubError::Config("tls: the CA secret holds no PEM certificate".into()));
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| ScrubError::Config(format!("tls: {e}")))?;
            if mode == TlsMode::VerifyFull {
                webpki as Arc<dyn danger::ServerCertVerifier>
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}
