//! What a TLS client of cohort's (the git mirror, the agent's control-API client) says when a
//! server's certificate is refused: which problem, in words, and whether a CA file would fix it.

use std::error::Error;

/// A server certificate a TLS client refused.
#[derive(Debug, Clone, PartialEq)]
pub struct UntrustedCertificate(pub rustls::CertificateError);

impl UntrustedCertificate {
    /// The refused certificate behind a failed connection, if that is why it failed: rustls's
    /// error, looked for along the chain of sources and inside `io::Error`s (whose `source()`
    /// skips the error they wrap, and which wrap one another).
    pub fn find(error: &(dyn Error + 'static)) -> Option<UntrustedCertificate> {
        let mut next = Some(error);
        while let Some(e) = next {
            let mut wrapped: &(dyn Error + 'static) = e;
            loop {
                if let Some(rustls::Error::InvalidCertificate(problem)) =
                    wrapped.downcast_ref::<rustls::Error>()
                {
                    return Some(UntrustedCertificate(problem.clone()));
                }
                match wrapped
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                {
                    Some(inner) => wrapped = inner,
                    None => break,
                }
            }
            next = e.source();
        }
        None
    }

    /// Whether trusting another CA would let the certificate through (it is sound, but
    /// signed by a CA this client does not know).
    pub fn unknown_ca(&self) -> bool {
        matches!(self.0, rustls::CertificateError::UnknownIssuer)
    }

    /// The problem, and for an unknown CA how to fix it with `ca_flag` (the client's option
    /// that takes a CA file).
    pub fn advice(&self, ca_flag: &str) -> String {
        match self.unknown_ca() {
            true => format!("{self}; if your own CA signed it, give that CA's certificate with {ca_flag}"),
            false => self.to_string(),
        }
    }
}

impl std::fmt::Display for UntrustedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use rustls::CertificateError as E;
        match &self.0 {
            E::UnknownIssuer => {
                f.write_str("the server's certificate is signed by a CA this client does not trust")
            }
            E::Expired | E::ExpiredContext { .. } => f.write_str("the server's certificate has expired"),
            E::NotValidYet | E::NotValidYetContext { .. } => {
                f.write_str("the server's certificate is not valid yet (is this machine's clock right?)")
            }
            E::NotValidForName | E::NotValidForNameContext { .. } => {
                f.write_str("the server's certificate was not issued for this host name")
            }
            E::Revoked => f.write_str("the server's certificate has been revoked"),
            other => write!(f, "the server's certificate was refused ({other:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::UntrustedCertificate;

    #[test]
    fn a_refused_certificate_is_found_inside_io_errors_wrapping_one_another() {
        let rustls_error = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        let outer = std::io::Error::other(inner);
        let found = UntrustedCertificate::find(&outer).expect("found");
        assert!(found.unknown_ca());
        assert_eq!(
            found.to_string(),
            "the server's certificate is signed by a CA this client does not trust"
        );
        assert_eq!(
            found.advice("--ca-file"),
            "the server's certificate is signed by a CA this client does not trust; \
             if your own CA signed it, give that CA's certificate with --ca-file"
        );

        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        let found = UntrustedCertificate::find(&expired).expect("found");
        assert!(
            !found.unknown_ca(),
            "a CA file does not help an expired certificate"
        );
        assert_eq!(found.advice("--ca-file"), "the server's certificate has expired");

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(UntrustedCertificate::find(&refused), None);
    }
}
