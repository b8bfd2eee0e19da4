//! The crate as it would be published: `cargo package` lists exactly the sources, docs,
//! example configuration and deployment files (no tests, benchmarks, fuzz targets or build
//! output), its metadata is complete, and the `.crate` unpacks into a crate of its own.
//! That the unpacked crate builds on its own (`cargo check --offline --locked`) is checked by
//! `scripts/test.sh` once this test has written `unpacked/.complete`, with the workspace's
//! target directory, whose dependencies are compiled already (`cargo test` holds that
//! directory locked while its tests run, so this test cannot).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cargo(args: &[&str], dir: &Path, target_dir: &Path) -> String {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .expect("run cargo");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "cargo {args:?}:\n{text}");
    text
}

#[test]
fn the_package_holds_what_it_should_and_builds_on_its_own() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for key in [
        "description",
        "license",
        "readme",
        "keywords",
        "categories",
        "include",
    ] {
        assert!(
            manifest.lines().any(|l| l.starts_with(&format!("{key} ="))),
            "Cargo.toml lacks `{key}`"
        );
    }
    // A target directory apart from the one `cargo test` holds locked while tests run.
    let target = root().join("target/package-check");
    let list = cargo(
        &["package", "--list", "--allow-dirty", "--offline"],
        &root(),
        &target,
    );
    let files: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "src/main.rs",
        "src/lib.rs",
        "src/doctor/mod.rs",
        "src/session/mod.rs",
        "src/listener.rs",
        "docs/operations.md",
        "config/entra-redis-proxy.toml",
        "deploy/systemd/entra-redis-proxy.service",
        "deploy/prometheus/rules.yaml",
        "deploy/grafana/entra-redis-proxy.json",
        "Dockerfile",
    ] {
        assert!(
            files.contains(&needed),
            "{needed} missing from the package: {files:?}"
        );
    }
    for f in &files {
        assert!(
            !(f.starts_with("tests/")
                || f.starts_with("bench/")
                || f.starts_with("fuzz/")
                || f.starts_with("target/")
                || f.starts_with("crates/")
                || f.starts_with("scripts/")),
            "{f} should not be in the package"
        );
    }
    // Every file the README links to inside the repository ships too (or the published
    // README has dead links).
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for link in readme.split("](").skip(1) {
        let target_path = link.split([')', '#']).next().unwrap();
        if target_path.starts_with("http") || target_path.is_empty() {
            continue;
        }
        let target_path = target_path.trim_end_matches('/');
        assert!(
            files
                .iter()
                .any(|f| f == &target_path || f.starts_with(&format!("{target_path}/"))),
            "README links to {target_path}, which is not in the package"
        );
    }

    cargo(
        &["package", "--allow-dirty", "--no-verify", "--offline"],
        &root(),
        &target,
    );
    let version = env!("CARGO_PKG_VERSION");
    let krate = target.join(format!("package/entra-redis-proxy-{version}.crate"));
    assert!(krate.exists(), "{}", krate.display());
    let unpacked = target.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked).unwrap();
    let ok = Command::new("tar")
        .arg("xzf")
        .arg(&krate)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap()
        .success();
    assert!(ok, "unpack the crate");
    let dir = unpacked.join(format!("entra-redis-proxy-{version}"));
    for f in ["Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs"] {
        assert!(dir.join(f).exists(), "{f} missing from the unpacked crate");
    }
    let packaged = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(
        !packaged.contains("crates/"),
        "the packaged manifest names a workspace crate: {packaged}"
    );
    // scripts/test.sh builds the unpacked crate once this exists.
    std::fs::write(unpacked.join(".complete"), b"").unwrap();
}
