//! Certificates for TLS tests, made with the `openssl` command: a private
//! certificate authority, a server certificate it signed for `localhost`
//! only (not for `127.0.0.1`, so that host name checks show), a second one
//! it signed for the same name (what a man in the middle holding a
//! mis-issued certificate would present), and an unrelated authority.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestCerts {
    _dir: tempfile::TempDir,
    /// The authority that signed the server's certificate (PEM).
    pub ca: PathBuf,
    /// An authority that signed nothing here.
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Also signed by `ca` for `localhost`: not the server's.
    pub impostor_cert: PathBuf,
    pub impostor_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestCerts {
    pub fn new() -> TestCerts {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for ca in ["ca", "other_ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=todo-api test {ca}"),
                ],
            );
        }
        std::fs::write(d.join("san.ext"), "subjectAltName=DNS:localhost\n").expect("san.ext");
        for name in ["server", "impostor"] {
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    "/CN=localhost",
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.crt"),
                    "-days",
                    "2",
                    "-sha256",
                    "-extfile",
                    "san.ext",
                ],
            );
        }
        TestCerts {
            ca: d.join("ca.crt"),
            other_ca: d.join("other_ca.crt"),
            server_cert: d.join("server.crt"),
            server_key: d.join("server.key"),
            impostor_cert: d.join("impostor.crt"),
            impostor_key: d.join("impostor.key"),
            _dir: dir,
        }
    }
}
