//! The certificate the mock serves: the configured one, or a test CA generated at start and a
//! certificate it signs for 127.0.0.1 and localhost.

use super::options::MockConfig;

/// The served certificate chain and key, and the CA PEM when generated.
pub(super) type TlsMaterial = (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
    Option<String>,
);

/// The certificate chain and key to serve, from `--tls-cert`/`--tls-key` or generated.
pub(super) fn tls_material(config: &MockConfig) -> std::io::Result<TlsMaterial> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if let Some((cert, key)) = &config.tls {
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(std::io::Error::other)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(std::io::Error::other)?;
        return Ok((chain, key, None));
    }
    let err = std::io::Error::other;
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mock-identity test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(err)?;
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mock-identity");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(err)?;
    let key = PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(std::io::Error::other)?;
    Ok((
        vec![leaf.der().clone(), ca_cert.der().clone()],
        key,
        Some(ca_cert.pem()),
    ))
}
