use super::backend::load_roots;
use super::*;
use rustls_pki_types::ServerName;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::ProtocolVersion;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// Unique temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("lb-tls-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed CA that issues leaf certificates into a temp dir.
struct Pki {
    dir: TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    ca_path: PathBuf,
}

/// A written leaf: its files and DER (to identify it on the wire).
struct Leaf {
    files: CertFiles,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new(cn: &str) -> Self {
        let dir = TempDir::new();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_path = dir.write("ca.pem", &ca.pem());
        Pki {
            dir,
            ca,
            ca_key,
            ca_path,
        }
    }

    fn issue(&self, file: &str, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let files = CertFiles {
            cert: self.dir.write(&format!("{file}.crt"), &cert.pem()),
            key: self.dir.write(&format!("{file}.key"), &key.serialize_pem()),
        };
        Leaf {
            files,
            der: cert.der().clone(),
        }
    }

    fn leaf(&self, file: &str, sans: &[&str]) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        self.issue(file, CertificateParams::new(sans).unwrap())
    }
}

fn load(leaf: &Leaf) -> LoadedCert {
    load_cert(&leaf.files).unwrap()
}

fn trusting(pki: &Pki) -> BackendTls {
    BackendTls {
        ca: Some(pki.ca_path.clone()),
        ..Default::default()
    }
}

type Pair = (
    client::TlsStream<tokio::io::DuplexStream>,
    server::TlsStream<tokio::io::DuplexStream>,
);

/// Handshake over an in-memory pipe; Err(String) names which side failed.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    sni: &str,
) -> Result<Pair, String> {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let connector = TlsConnector::from(client);
    let name = server_name(sni).unwrap();
    let fut = async { tokio::join!(connector.connect(name, c), acceptor.accept(s)) };
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Err(_) => Err("timeout".into()),
        Ok((Ok(c), Ok(s))) => Ok((c, s)),
        Ok((c, s)) => Err(format!("client: {:?}; server: {:?}", c.err(), s.err())),
    }
}

/// The leaf DER the client received.
fn served(pair: &Pair) -> CertificateDer<'static> {
    pair.0.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn err_text(r: Result<LoadedCert, TlsError>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn names_from_san_including_wildcard() {
    let pki = Pki::new("Test CA");
    let leaf = pki.leaf(
        "multi",
        &["A.Example.com", "*.wild.example.com", "b.example.com."],
    );
    let c = load(&leaf);
    assert_eq!(
        c.names,
        ["a.example.com", "*.wild.example.com", "b.example.com"]
    );
    assert_eq!(c.key.cert.len(), 1);
    assert!(c.not_after.is_some());
}

#[test]
fn names_fall_back_to_cn_and_not_after_is_read() {
    let pki = Pki::new("Test CA");
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "Cn.Example.com");
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let c = load(&pki.issue("cn", params));
    assert_eq!(c.names, ["cn.example.com"]);
    assert_eq!(c.not_after, Some(1_893_456_000));
}

#[test]
fn chain_order_preserved_and_combined_pem_works() {
    let pki = Pki::new("Test CA");
    let leaf = pki.leaf("leaf", &["a.example.com"]);
    let pem = std::fs::read_to_string(&leaf.files.cert).unwrap()
        + &std::fs::read_to_string(&pki.ca_path).unwrap()
        + &std::fs::read_to_string(&leaf.files.key).unwrap();
    let both = pki.dir.write("combined.pem", &pem);
    let c = load_cert(&CertFiles {
        cert: both.clone(),
        key: both,
    })
    .unwrap();
    assert_eq!(c.key.cert.len(), 2);
    assert_eq!(c.key.cert[0], leaf.der);
    assert_eq!(&c.key.cert[1], pki.ca.der());
}

#[test]
fn load_errors_name_the_file() {
    let pki = Pki::new("Test CA");
    let a = pki.leaf("a", &["a.example.com"]);
    let b = pki.leaf("b", &["b.example.com"]);
    let missing = pki.dir.0.join("missing.pem");
    let empty = pki.dir.write("empty.pem", "");
    let garbage = pki.dir.write("garbage.pem", "this is not PEM at all\n");
    let bad_b64 = pki.dir.write(
        "bad64.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!not base64!!!!\n-----END CERTIFICATE-----\n",
    );
    let not_der = pki.dir.write(
        "notder.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    );
    let key = a.files.key.clone();
    let with = |cert: &PathBuf, key: &PathBuf| CertFiles {
        cert: cert.clone(),
        key: key.clone(),
    };

    let e = err_text(load_cert(&with(&missing, &key)));
    assert!(
        e.starts_with(&format!("reading certificate {}: ", missing.display())),
        "{e}"
    );
    let e = err_text(load_cert(&with(&empty, &key)));
    assert_eq!(e, format!("no certificate in {}", empty.display()));
    let e = err_text(load_cert(&with(&garbage, &key)));
    assert_eq!(e, format!("no certificate in {}", garbage.display()));
    let e = err_text(load_cert(&with(&bad_b64, &key)));
    assert!(
        e.starts_with(&format!("reading certificate {}: ", bad_b64.display())),
        "{e}"
    );
    let e = err_text(load_cert(&with(&not_der, &key)));
    assert!(
        e.starts_with(&format!("parsing certificate {}: ", not_der.display())),
        "{e}"
    );

    let e = err_text(load_cert(&with(&a.files.cert, &missing)));
    assert!(
        e.starts_with(&format!("reading private key {}: ", missing.display())),
        "{e}"
    );
    let e = err_text(load_cert(&with(&a.files.cert, &empty)));
    assert_eq!(e, format!("no private key in {}", empty.display()));
    // A certificate file holds no key.
    let e = err_text(load_cert(&with(&a.files.cert, &a.files.cert)));
    assert_eq!(e, format!("no private key in {}", a.files.cert.display()));

    let e = err_text(load_cert(&with(&a.files.cert, &b.files.key)));
    assert_eq!(
        e,
        format!(
            "key {} does not match certificate {}",
            b.files.key.display(),
            a.files.cert.display()
        )
    );
}

#[test]
fn resolver_selection_rules() {
    let pki = Pki::new("Test CA");
    let a = load(&pki.leaf("a", &["a.example.com"]));
    let a2 = load(&pki.leaf("a2", &["a.example.com", "only2.example.com"]));
    let w = load(&pki.leaf("w", &["*.wild.example.com"]));
    let r = SniResolver::new(vec![a, a2, w], Some(1));
    assert_eq!(r.len(), 3);
    assert!(!r.is_empty());
    assert_eq!(
        r.select(Some("a.example.com")),
        Some(0),
        "first cert wins duplicates"
    );
    assert_eq!(r.select(Some("A.EXAMPLE.COM.")), Some(0));
    assert_eq!(r.select(Some("only2.example.com")), Some(1));
    assert_eq!(r.select(Some("x.wild.example.com")), Some(2));
    assert_eq!(r.select(Some("X.Wild.Example.Com.")), Some(2));
    assert_eq!(
        r.select(Some("a.b.wild.example.com")),
        Some(1),
        "one label only"
    );
    assert_eq!(r.select(Some("wild.example.com")), Some(1));
    assert_eq!(r.select(Some("nope.test")), Some(1));
    assert_eq!(r.select(None), Some(1));

    let none = SniResolver::new(vec![load(&pki.leaf("n", &["n.example.com"]))], None);
    assert_eq!(none.select(Some("other.example.com")), None);
    assert_eq!(none.select(None), None);
    assert_eq!(none.select(Some("n.example.com")), Some(0));
}

#[test]
fn server_config_validates_inputs() {
    let pki = Pki::new("Test CA");
    assert!(matches!(
        server_config(vec![], None, &[]),
        Err(TlsError::NoCerts)
    ));
    let a = load(&pki.leaf("a", &["a.example.com"]));
    let e = server_config(vec![a.clone()], Some(1), &[]).err().unwrap();
    assert!(
        matches!(e, TlsError::BadDefault { index: 1, len: 1 }),
        "{e}"
    );
    let cfg = server_config(vec![a], Some(0), &[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(cfg.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
}

#[test]
fn client_config_errors() {
    let e = client_config(&BackendTls::default(), &[]).err().unwrap();
    assert_eq!(
        e.to_string(),
        "backend TLS needs a ca file or insecure_skip_verify"
    );
    let dir = TempDir::new();
    let missing = dir.0.join("nope.pem");
    let garbage = dir.write("garbage.pem", "garbage\n");
    for p in [missing, garbage] {
        let cfg = BackendTls {
            ca: Some(p.clone()),
            ..Default::default()
        };
        let e = client_config(&cfg, &[]).err().unwrap().to_string();
        assert!(
            e.starts_with(&format!("bad CA file {}: ", p.display())),
            "{e}"
        );
    }
    assert!(client_config(
        &BackendTls {
            insecure_skip_verify: true,
            ..Default::default()
        },
        &[]
    )
    .is_ok());
}

#[test]
fn server_name_parsing() {
    assert!(matches!(
        server_name("backend.example.com").unwrap(),
        ServerName::DnsName(_)
    ));
    assert!(matches!(
        server_name("10.0.0.1").unwrap(),
        ServerName::IpAddress(_)
    ));
    assert!(matches!(
        server_name("::1").unwrap(),
        ServerName::IpAddress(_)
    ));
    let e = server_name("bad name!").err().unwrap().to_string();
    assert!(e.contains("\"bad name!\""), "{e}");
}

#[tokio::test]
async fn sni_handshakes_pick_the_right_cert() {
    let pki = Pki::new("Test CA");
    let a = pki.leaf("a", &["a.example.com"]);
    let w = pki.leaf("w", &["*.wild.example.com"]);
    let d = pki.leaf("d", &["default.example.com"]);
    let srv = server_config(vec![load(&a), load(&w), load(&d)], Some(2), &[]).unwrap();
    // Skip verification: the default cert is served for names it doesn't cover.
    let insecure = BackendTls {
        insecure_skip_verify: true,
        ..Default::default()
    };
    let cli = client_config(&insecure, &[]).unwrap();
    for (sni, want) in [
        ("a.example.com", &a),
        ("x.wild.example.com", &w),
        ("a.b.wild.example.com", &d),
        ("unknown.test", &d),
    ] {
        let pair = handshake(srv.clone(), cli.clone(), sni).await.unwrap();
        assert!(served(&pair) == want.der, "wrong cert for {sni}");
        assert_eq!(pair.1.get_ref().1.server_name(), Some(sni));
    }
    // Verified against the CA too, for names the cert covers.
    let verified = client_config(&trusting(&pki), &[]).unwrap();
    let pair = handshake(srv.clone(), verified, "x.wild.example.com")
        .await
        .unwrap();
    assert!(served(&pair) == w.der);

    let no_default = server_config(vec![load(&a)], None, &[]).unwrap();
    let e = handshake(no_default.clone(), cli.clone(), "unknown.test")
        .await
        .err()
        .unwrap();
    assert!(e.contains("client: Some"), "{e}");
    handshake(no_default, cli, "a.example.com").await.unwrap();
}

#[tokio::test]
async fn alpn_negotiation() {
    let pki = Pki::new("Test CA");
    let a = pki.leaf("a", &["a.example.com"]);
    let srv = server_config(vec![load(&a)], None, &[b"h2", b"http/1.1"]).unwrap();
    for (offer, want) in [
        (&[&b"h2"[..]][..], &b"h2"[..]),
        (&[&b"http/1.1"[..]][..], &b"http/1.1"[..]),
        (&[&b"http/1.1"[..], &b"h2"[..]][..], &b"h2"[..]),
    ] {
        let cli = client_config(&trusting(&pki), offer).unwrap();
        let pair = handshake(srv.clone(), cli, "a.example.com").await.unwrap();
        assert_eq!(pair.0.get_ref().1.alpn_protocol(), Some(want));
        assert_eq!(pair.1.get_ref().1.alpn_protocol(), Some(want));
    }
    // No common protocol: rustls refuses the handshake.
    let cli = client_config(&trusting(&pki), &[b"spdy/3"]).unwrap();
    assert!(handshake(srv, cli, "a.example.com").await.is_err());
}

#[tokio::test]
async fn tls12_and_tls13() {
    let pki = Pki::new("Test CA");
    let a = pki.leaf("a", &["a.example.com"]);
    let srv = server_config(vec![load(&a)], None, &[]).unwrap();
    let roots = load_roots(&pki.ca_path).unwrap();
    for (version, want) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let cli = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let pair = handshake(srv.clone(), Arc::new(cli), "a.example.com")
            .await
            .unwrap();
        assert_eq!(pair.0.get_ref().1.protocol_version(), Some(want));
    }
    let cli = client_config(&trusting(&pki), &[]).unwrap();
    let pair = handshake(srv, cli, "a.example.com").await.unwrap();
    assert_eq!(
        pair.0.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn backend_verification() {
    let pki = Pki::new("Test CA");
    let other = Pki::new("Other CA");
    let good = pki.leaf("good", &["backend.example.com"]);
    let rogue = other.leaf("rogue", &["backend.example.com"]);
    let cli = client_config(&trusting(&pki), &[]).unwrap();

    let srv = server_config(vec![load(&good)], None, &[]).unwrap();
    handshake(srv.clone(), cli.clone(), "backend.example.com")
        .await
        .unwrap();
    // Right CA, wrong name.
    let e = handshake(srv, cli.clone(), "elsewhere.example.com")
        .await
        .err()
        .unwrap();
    assert!(e.contains("client: Some"), "{e}");
    // Wrong CA.
    let srv = server_config(vec![load(&rogue)], None, &[]).unwrap();
    let e = handshake(srv.clone(), cli, "backend.example.com")
        .await
        .err()
        .unwrap();
    assert!(e.contains("UnknownIssuer"), "{e}");
    // insecure_skip_verify accepts it (and ignores the ca).
    let skip = BackendTls {
        insecure_skip_verify: true,
        ..trusting(&pki)
    };
    let pair = handshake(
        srv,
        client_config(&skip, &[]).unwrap(),
        "backend.example.com",
    )
    .await;
    assert!(served(&pair.unwrap()) == rogue.der);
}

#[tokio::test]
async fn client_certificate_is_presented() {
    let pki = Pki::new("Test CA");
    let srv_leaf = pki.leaf("srv", &["backend.example.com"]);
    let client_leaf = pki.leaf("client", &["client.example.com"]);
    let roots = Arc::new(load_roots(&pki.ca_path).unwrap());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .unwrap();
    let resolver = SniResolver::new(vec![load(&srv_leaf)], Some(0));
    let srv = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    let srv = Arc::new(srv);

    let with_cert = BackendTls {
        client_cert: Some(client_leaf.files.clone()),
        ..trusting(&pki)
    };
    let cli = client_config(&with_cert, &[]).unwrap();
    let pair = handshake(srv.clone(), cli, "backend.example.com")
        .await
        .unwrap();
    let got = pair.1.get_ref().1.peer_certificates().unwrap();
    assert!(got[0] == client_leaf.der);

    // Without a client certificate the server refuses.
    let cli = client_config(&trusting(&pki), &[]).unwrap();
    let e = handshake(srv, cli, "backend.example.com")
        .await
        .err()
        .unwrap();
    assert!(e.contains("server: Some"), "{e}");

    // A mismatched client key is caught when building the config.
    let bad = CertFiles {
        cert: client_leaf.files.cert.clone(),
        key: srv_leaf.files.key.clone(),
    };
    let cfg = BackendTls {
        client_cert: Some(bad),
        ..trusting(&pki)
    };
    let e = client_config(&cfg, &[]).err().unwrap();
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
}
