//! A local HTTPS target whose certificate, signed by a test CA made here,
//! ends in a given number of days: for `tls_expiry_days`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

pub struct TlsTarget {
    pub addr: SocketAddr,
    /// The test CA's certificate (PEM), for the prober's trust.
    pub ca_pem: String,
    /// The served certificate's notAfter, epoch seconds.
    pub not_after_s: i64,
}

impl TlsTarget {
    /// Serves "ok" over TLS with a certificate for 127.0.0.1 that ends in
    /// `days` days.
    pub fn start(days: i64) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "vigil test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(86_400);
        params.not_after = now + Duration::from_secs(days as u64 * 86_400);
        let leaf = params.signed_by(&key, &ca).expect("leaf certificate");
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let addr = crate::serve::spawn_with(move |listener| async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer =
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TlsTarget {
            addr,
            ca_pem: ca.pem(),
            not_after_s: (now + Duration::from_secs(days as u64 * 86_400)).unix_timestamp(),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}/healthz", self.addr)
    }
}
