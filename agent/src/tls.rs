//! TLS for the MQTT transport (`mqtts://`): rustls with the ring provider, the broker's
//! certificate checked against the CA file in `[transport] mqtt_ca_file` (a cluster's own CA,
//! usually) or, when that is empty, the system's roots.
//!
//! A Raspberry Pi has no real-time clock: until NTP answers it believes it is whatever time
//! its last shutdown saved, or 1970 on a fresh card. A strict validity check would then refuse
//! every certificate and the node could not deliver until its clock was set — while its spool
//! fills. So the certificate's validity is checked at the later of the system clock and
//! [`CLOCK_FLOOR`], a date no correct clock can be before. A clock that is right is used as
//! it is; everything else about the chain (signature, issuer, name) is checked as usual.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// 2026-11-01T00:00:00Z, before this build existed: certificate validity is never checked
/// at an earlier time than this (raise it with each release).
pub const CLOCK_FLOOR: Duration = Duration::from_secs(1_793_491_200);

/// The client configuration for `mqtts://`: trusts the certificates in `ca_file` (PEM), or
/// the system's roots when it is empty.
pub fn client_config(ca_file: &str) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    if ca_file.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        anyhow::ensure!(
            added > 0,
            "no trusted CA certificates in the system store; set transport.mqtt_ca_file"
        );
    } else {
        for cert in CertificateDer::pem_file_iter(ca_file)
            .with_context(|| format!("read transport.mqtt_ca_file {ca_file}"))?
        {
            let cert = cert.with_context(|| format!("transport.mqtt_ca_file {ca_file}"))?;
            roots.add(cert).with_context(|| {
                format!("transport.mqtt_ca_file {ca_file}: not a CA certificate")
            })?;
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "transport.mqtt_ca_file {ca_file}: no certificate in it"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("build the certificate verifier")?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ClockFloor(webpki)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The WebPKI verifier, with certificate time no earlier than [`CLOCK_FLOOR`].
#[derive(Debug)]
struct ClockFloor(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ClockFloor {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let now = now.max(UnixTime::since_unix_epoch(CLOCK_FLOOR));
        self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_floor_is_the_documented_date() {
        let floor =
            time::OffsetDateTime::from_unix_timestamp(CLOCK_FLOOR.as_secs() as i64).unwrap();
        assert_eq!((floor.year(), u8::from(floor.month()), floor.day()), (2026, 11, 1));
    }

    #[test]
    fn a_bad_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = format!("{:#}", client_config(missing.to_str().unwrap()).unwrap_err());
        assert!(e.contains("read transport.mqtt_ca_file"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let e = format!("{:#}", client_config(empty.to_str().unwrap()).unwrap_err());
        assert!(e.contains("no certificate in it"), "{e}");
    }
}
