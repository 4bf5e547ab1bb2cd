//! Certificates for TLS tests, made at test time with the `openssl` CLI (nothing secret
//! is checked in, nothing expires in the repository): a CA, a server certificate it
//! signed for the given IP addresses, and a second, unrelated CA.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The files [`make`] wrote.
pub struct TestPki {
    /// The CA that signed `cert`.
    pub ca: PathBuf,
    /// Another CA, which signed nothing here: trusting it must refuse `cert`.
    pub other_ca: PathBuf,
    /// The server certificate (PEM), for every address given to [`make`].
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// The extensions webpki wants: a CA that may sign, and a server certificate whose
/// names are IP SANs (no SNI is sent to an address).
const CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = kiln test
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Writes a CA, a server certificate for `ips` and another CA into `dir`. `None` (and a
/// `SKIPPED` line) when `openssl` is not installed, outside CI; in CI a missing tool
/// fails the test.
///
/// # Panics
/// When `openssl` runs and fails, or `dir` cannot be written.
pub fn make(dir: &Path, ips: &[&str]) -> Option<TestPki> {
    if Command::new("openssl").arg("version").output().is_err() {
        let why = "openssl is not installed (apt-get install openssl)";
        assert!(std::env::var_os("CI").is_none(), "cannot run: {why}");
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
    let config = format!("{CONFIG}subjectAltName = {}\n", sans.join(","));
    std::fs::write(dir.join("openssl.cnf"), config).expect("write openssl.cnf");
    let ca = |name: &str| {
        run(
            dir,
            &[
                "req",
                "-x509",
                "-config",
                "openssl.cnf",
                "-extensions",
                "ca_ext",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=kiln test {name}"),
            ],
        );
        dir.join(format!("{name}.pem"))
    };
    let (signing, other) = (ca("ca"), ca("other-ca"));
    run(
        dir,
        &[
            "req",
            "-new",
            "-config",
            "openssl.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=kiln test server",
        ],
    );
    run(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "server_ext",
            "-out",
            "server.pem",
        ],
    );
    Some(TestPki {
        ca: signing,
        other_ca: other,
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

fn run(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
