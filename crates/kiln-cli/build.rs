//! Builds `kiln-agent` as a static binary and embeds it in `kiln`, so that the one
//! binary a user runs can put an agent into every sandbox, whatever libc the sandbox's
//! image has. The nested cargo uses its own target directory, so it never waits on the
//! outer build's lock. `KILN_EMBED_AGENT=0` skips it (the server then needs
//! `runtime.agent_binary` or `KILN_AGENT_BIN`).
use std::path::PathBuf;
use std::process::Command;

fn main() {
    for path in [
        "../kiln-agent/src",
        "../kiln-agent/Cargo.toml",
        "../kiln-protocol/src",
        "../kiln-protocol/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-env-changed=KILN_EMBED_AGENT");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out.join("kiln-agent");
    let target = std::env::var("TARGET").unwrap_or_default();
    // Only the gnu target is installed here; elsewhere, no embedded agent.
    if std::env::var("KILN_EMBED_AGENT").as_deref() == Ok("0")
        || target != "x86_64-unknown-linux-gnu"
    {
        std::fs::write(&dest, b"").expect("write empty agent");
        return;
    }
    let workspace =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir")).join("../..");
    let target_dir = out.join("agent-build");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "kiln-agent",
            "--target",
            &target,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=symbols",
        )
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run cargo to build kiln-agent");
    assert!(status.success(), "building the static kiln-agent failed");
    let built = target_dir.join(&target).join("release").join("kiln-agent");
    std::fs::copy(&built, &dest).expect("copy kiln-agent");
}
