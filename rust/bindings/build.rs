//! The revision of the source the extension is built from (`toolgate._core.__revision__`,
//! shown by `toolgate --version` and exported as `toolgate_build_info`): `TOOLGATE_REVISION`
//! when set (a build from an archive, which has no .git), else the git commit checked out,
//! else empty (unknown). And the optimisation level it is compiled at
//! (`toolgate._core.OPT_LEVEL`), which the benches check before they record a figure.

use std::path::PathBuf;
use std::process::Command;

/// The crate's directory, read when the script runs: the script's binary is shared by every
/// checkout that builds into one kept target directory (scripts/build-cache.sh), so a path
/// compiled into it would name whichever checkout built it first.
fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(manifest_dir())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// A file of the git directory, as an absolute path (git names it relative to the manifest's
/// directory when it is not in a linked worktree).
fn git_file(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(git(&["rev-parse", "--git-path", name])?);
    Some(manifest_dir().join(path))
}

fn main() {
    println!("cargo:rerun-if-env-changed=TOOLGATE_REVISION");
    let revision = match std::env::var("TOOLGATE_REVISION") {
        Ok(revision) => revision,
        Err(_) => {
            // Built again when HEAD moves: a commit, a checkout, a branch updated by a fetch.
            let branch = git(&["symbolic-ref", "-q", "HEAD"]);
            let watched = ["HEAD", "packed-refs"]
                .into_iter()
                .map(str::to_owned)
                .chain(branch);
            for file in watched.filter_map(|name| git_file(&name)) {
                if file.exists() {
                    println!("cargo:rerun-if-changed={}", file.display());
                }
            }
            git(&["rev-parse", "HEAD"]).unwrap_or_default()
        }
    };
    println!("cargo:rustc-env=TOOLGATE_REVISION={revision}");
    let opt_level = std::env::var("OPT_LEVEL").expect("cargo sets OPT_LEVEL");
    println!("cargo:rustc-env=TOOLGATE_OPT_LEVEL={opt_level}");
}
