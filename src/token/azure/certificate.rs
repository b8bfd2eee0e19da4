//! The client assertion of `client-certificate`: a JWT signed with the certificate's RSA key,
//! the key read from a PEM file or a PFX/PKCS#12 file.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::http::ClientMethodOptions;
use azure_identity::ClientAssertion;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::token::TokenError;

/// Lifetime of the client assertion signed for `client-certificate`.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// Signs the client assertion for `client-certificate` (RS256 with the certificate's RSA
/// key), the way Entra expects: `x5t`/`x5t#S256` thumbprints in the header, `aud` the token
/// endpoint, `iss` = `sub` = the client id.
pub(super) struct CertificateAssertion {
    /// The RSA key; never printed.
    key: aws_lc_rs::signature::RsaKeyPair,
    /// The JWT header, already base64url-encoded.
    header: String,
    /// The client id (`iss` and `sub`).
    client_id: String,
    /// The token endpoint (`aud`).
    audience: String,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The DER object identifier of an RSA public key (`rsaEncryption`).
const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";

/// The fix named in every error about the PFX password.
const PASSWORD_FIX: &str = "check certificate_password_file (--certificate-password-file, ENTRA_REDIS_PROXY_CERTIFICATE_PASSWORD_FILE)";

/// Whether the certificate file is PEM (text with `-----BEGIN ` armour).
fn is_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Whether a non-PEM certificate file should be read as PFX/PKCS#12: its content is a DER
/// SEQUENCE, or its name ends in `.pfx`/`.p12`.
fn is_pfx(path: &Path, data: &[u8]) -> bool {
    let by_name = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pfx") || e.eq_ignore_ascii_case("p12"));
    by_name || data.first() == Some(&0x30)
}

/// Reads the PFX password: the password file without its trailing newline; no file set means
/// the empty password (an unprotected PFX).
async fn read_pfx_password(
    password_file: Option<&Path>,
) -> Result<zeroize::Zeroizing<String>, TokenError> {
    let Some(path) = password_file else {
        return Ok(zeroize::Zeroizing::new(String::new()));
    };
    let mut raw = zeroize::Zeroizing::new(tokio::fs::read_to_string(path).await.map_err(
        |source| TokenError::Read {
            what: "certificate password file (certificate_password_file, --certificate-password-file)",
            path: path.display().to_string(),
            source,
        },
    )?);
    crate::token::warn_if_readable_by_others(path, "certificate password file");
    // Only the line ending goes: spaces may be part of a password. Truncating in place keeps
    // the password in the one zeroized buffer.
    let len = raw.trim_end_matches(['\r', '\n']).len();
    raw.truncate(len);
    Ok(raw)
}

/// The RSA key and the leaf certificate (DER) of a PEM certificate file.
fn key_and_certificate_from_pem(
    pem: &[u8],
    bad: &dyn Fn(&str) -> TokenError,
) -> Result<(aws_lc_rs::signature::RsaKeyPair, Vec<u8>), TokenError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if pem.windows(19).any(|w| w == b"ENCRYPTED PRIVATE K") {
        return Err(bad(
            "the private key is encrypted; store it unencrypted in a file only the proxy can read, or use a PFX file with certificate_password_file",
        ));
    }
    let cert = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| bad("no CERTIFICATE block"))?
        .map_err(|_| bad("the CERTIFICATE block is not valid PEM"))?;
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| bad("no private key block (PEM must hold the certificate and its key)"))?;
    let key = match &key {
        PrivateKeyDer::Pkcs8(k) => {
            aws_lc_rs::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der())
        }
        PrivateKeyDer::Pkcs1(k) => aws_lc_rs::signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => {
            return Err(bad(
                "the private key must be RSA (Entra signs assertions with RS256)",
            ))
        }
    }
    .map_err(|_| bad("the private key is not a usable RSA key"))?;
    Ok((key, cert.to_vec()))
}

/// The RSA key and the leaf certificate (DER) of a PFX/PKCS#12 file opened with `password`:
/// the first private key, and the certificate whose public key is that key's. Errors never
/// carry the password or key material; the decrypted key is wiped once the signing key is
/// built from it.
fn key_and_certificate_from_pfx(
    data: &[u8],
    password: &str,
    password_file: Option<&Path>,
    bad: &dyn Fn(&str) -> TokenError,
) -> Result<(aws_lc_rs::signature::RsaKeyPair, Vec<u8>), TokenError> {
    use super::pfx::{self, PfxError};
    use aws_lc_rs::signature::KeyPair;
    let tried = match password_file {
        Some(p) => format!("the password in {}", p.display()),
        None => "the empty password (no certificate_password_file is set)".to_owned(),
    };
    let contents = pfx::read(data, password).map_err(|e| match e {
        PfxError::WrongPassword => bad(&format!(
            "cannot open the PFX: {tried} does not open it; {PASSWORD_FIX}"
        )),
        PfxError::Unsupported(what) => bad(&format!(
            "cannot open the PFX: it uses an unsupported algorithm or form ({what}); re-export it with `openssl pkcs12 -export` (AES-256, SHA-256)"
        )),
        PfxError::Malformed(why) => bad(&format!(
            "cannot open the PFX ({why}): not a valid PFX/PKCS#12 file; `openssl pkcs12 -info -noout -in FILE` shows whether the file and password are right"
        )),
    })?;
    // `contents.keys` are zeroizing buffers: dropped (wiped) when this function returns.
    let key_der = contents.keys.first().ok_or_else(|| {
        bad("the PFX holds no private key with its certificate; export it with the key (`openssl pkcs12 -export -inkey KEY -in CERT`)")
    })?;
    let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(key_der).map_err(|_| {
        match pkcs8_algorithm(key_der) {
            Some(oid) if oid != RSA_ENCRYPTION_OID => bad(&format!(
                "the private key in the PFX is not RSA (algorithm {oid}); only RSA keys are supported (Entra signs assertions with RS256)"
            )),
            _ => bad("the private key in the PFX is not a usable RSA key"),
        }
    })?;
    let public = key.public_key().as_ref().to_vec();
    let cert = contents
        .certificates
        .into_iter()
        .find(|der| certificate_public_key(der).as_deref() == Some(public.as_slice()))
        .ok_or_else(|| bad("the PFX holds no certificate for its private key"))?;
    Ok((key, cert))
}

/// The algorithm OID (dotted) of a PKCS#8 `PrivateKeyInfo`.
fn pkcs8_algorithm(der: &[u8]) -> Option<String> {
    use der::{Decode, Reader};
    let info = der::asn1::AnyRef::from_der(der).ok()?;
    let mut reader = der::SliceReader::new(info.value()).ok()?;
    let _version: u8 = reader.decode().ok()?;
    let algorithm = der::asn1::AnyRef::decode(&mut reader).ok()?;
    let mut reader = der::SliceReader::new(algorithm.value()).ok()?;
    let oid: der::asn1::ObjectIdentifier = reader.decode().ok()?;
    Some(oid.to_string())
}

/// The subject public key (for RSA, the PKCS#1 `RSAPublicKey`) of an X.509 certificate.
fn certificate_public_key(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

impl CertificateAssertion {
    /// Reads the certificate file: PEM holding the certificate (first) and its RSA private key,
    /// or a PFX/PKCS#12 file opened with the password in `password_file`.
    pub(super) async fn load(
        path: &Path,
        password_file: Option<&Path>,
        client_id: &str,
        audience: &str,
    ) -> Result<Self, TokenError> {
        let data = zeroize::Zeroizing::new(tokio::fs::read(path).await.map_err(|source| {
            TokenError::Read {
                what: "certificate file (certificate_file, --certificate-file)",
                path: path.display().to_string(),
                source,
            }
        })?);
        let bad =
            |why: &str| TokenError::Provider(format!("certificate file {}: {why}", path.display()));
        let (key, cert) = if is_pem(&data) {
            key_and_certificate_from_pem(&data, &bad)?
        } else if is_pfx(path, &data) {
            let password = read_pfx_password(password_file).await?;
            key_and_certificate_from_pfx(&data, &password, password_file, &bad)?
        } else {
            return Err(bad(
                "neither PEM (certificate and private key) nor PFX/PKCS#12",
            ));
        };
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert);
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": URL_SAFE_NO_PAD.encode(sha1.as_ref()),
            "x5t#S256": URL_SAFE_NO_PAD.encode(sha256.as_ref()),
        });
        Ok(CertificateAssertion {
            key,
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
            client_id: client_id.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// A newly signed assertion.
    fn sign(&self) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = serde_json::json!({
            "aud": self.audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": random_id(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| TokenError::Provider("signing the client assertion failed".into()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(&signature)
        ))
    }
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.sign().map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Credential, e.to_string())
        })
    }
}

/// A random GUID-shaped identifier (for `jti`).
fn random_id() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff | 0x4000,
        u16::from_be_bytes([b[8], b[9]]) & 0x3fff | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_differ_and_look_like_guids() {
        let (a, b) = (random_id(), random_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[tokio::test]
    async fn certificate_assertion_is_a_valid_rs256_jwt() {
        use aws_lc_rs::signature::{KeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sp.pem");
        std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        let aud = "https://login.example/t/oauth2/v2.0/token";
        let signer = CertificateAssertion::load(&path, None, "app", aud)
            .await
            .unwrap();
        let jwt = signer.sign().unwrap();
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        UnparsedPublicKey::new(
            &RSA_PKCS1_2048_8192_SHA256,
            signer.key.public_key().as_ref(),
        )
        .verify(signed.as_bytes(), &sig)
        .expect("the signature verifies with the certificate's key");
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(signed.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["aud"], aud);
        assert_eq!(claims["iss"], "app");
        assert_eq!(claims["sub"], "app");
        assert!(claims["exp"].as_u64().unwrap() > claims["nbf"].as_u64().unwrap());
        // Debug shows no key material.
        let debug = format!("{signer:?}");
        assert!(debug.contains("app") && !debug.contains("key"), "{debug}");
        // Each assertion is new (jti).
        assert_ne!(signer.sign().unwrap(), jwt);
    }
}
