//! The names on a client certificate (mutual TLS): what a module sees
//! through `HostServices::peer_identity` once rustls has verified the
//! certificate against `client_ca`.
//!
//! Pure: DER in, names out, no verification (that is rustls' job, done
//! before this runs). The order is a contract modules rely on to map a
//! certificate to a user: the subject's common name (CN) first, then the
//! subject alternative names: DNS names, e-mail (rfc822) names, URIs, each
//! group in certificate order. A name appears once (a CN repeated as a DNS
//! name is kept at its first place). Names that are empty, not text, or
//! that hold control characters are left out: they could not be matched
//! against a configured user name and would only garble log lines.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// Why no names could be read (the certificate does not parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCertificate(pub String);

impl std::fmt::Display for BadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unreadable client certificate: {}", self.0)
    }
}

/// The names of the certificate `der`, in the order described above;
/// empty when it has none.
pub fn names(der: &[u8]) -> Result<Vec<String>, BadCertificate> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| BadCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(BadCertificate(format!(
            "{} bytes after the certificate",
            rest.len()
        )));
    }
    let mut out: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if usable(name) && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    };
    // A CN that is not a text string (say a BMPString) is skipped, not an
    // error: the SANs may still name the client.
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            add(s);
        }
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| BadCertificate(format!("subject alternative names: {e}")))?;
    if let Some(san) = san {
        let general = &san.value.general_names;
        for n in general {
            if let GeneralName::DNSName(s) = n {
                add(s);
            }
        }
        for n in general {
            if let GeneralName::RFC822Name(s) = n {
                add(s);
            }
        }
        for n in general {
            if let GeneralName::URI(s) = n {
                add(s);
            }
        }
    }
    Ok(out)
}

/// Whether a name may be handed to modules.
fn usable(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = sans;
        p.self_signed(&key).unwrap().der().to_vec()
    }

    fn dns(s: &str) -> SanType {
        SanType::DnsName(s.try_into().unwrap())
    }
    fn email(s: &str) -> SanType {
        SanType::Rfc822Name(s.try_into().unwrap())
    }
    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn cn_first_then_dns_email_uri_in_that_order() {
        // Listed in the certificate out of the contract's order.
        let der = cert(
            Some("bot1"),
            vec![
                uri("spiffe://example.test/bot1"),
                email("bot1@example.test"),
                dns("bot1.example.test"),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                dns("b1.example.test"),
                email("ops@example.test"),
            ],
        );
        assert_eq!(
            names(&der).unwrap(),
            [
                "bot1",
                "bot1.example.test",
                "b1.example.test",
                "bot1@example.test",
                "ops@example.test",
                "spiffe://example.test/bot1",
            ]
        );
    }

    #[test]
    fn each_name_once() {
        let der = cert(
            Some("bot1.example.test"),
            vec![
                dns("bot1.example.test"),
                dns("other.example.test"),
                dns("bot1.example.test"),
            ],
        );
        assert_eq!(
            names(&der).unwrap(),
            ["bot1.example.test", "other.example.test"]
        );
    }

    #[test]
    fn without_cn_or_sans() {
        assert_eq!(
            names(&cert(None, vec![dns("only.example.test")])).unwrap(),
            ["only.example.test"]
        );
        assert_eq!(names(&cert(Some("just-cn"), vec![])).unwrap(), ["just-cn"]);
        assert!(names(&cert(None, vec![])).unwrap().is_empty());
    }

    #[test]
    fn control_characters_and_empty_names_are_left_out() {
        let der = cert(Some("evil\nname"), vec![dns("ok.example.test")]);
        assert_eq!(names(&der).unwrap(), ["ok.example.test"]);
        let der = cert(Some(""), vec![]);
        assert!(names(&der).unwrap().is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(names(b"").is_err());
        assert!(names(b"\x30\x03\x02\x01\x01").is_err());
        let der = cert(Some("bot1"), vec![]);
        assert!(names(&der[..der.len() - 1]).is_err(), "truncated");
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(names(&trailing).is_err(), "trailing byte");
        for cut in 0..der.len() {
            let _ = names(&der[..cut]);
        }
    }
}
