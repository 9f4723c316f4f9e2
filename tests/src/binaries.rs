//! The workspace's own binaries, for tests that start them as separate processes.
//!
//! Cargo builds the libraries a test links and the binaries of the test's own package, but not the
//! binaries of other packages. [`workspace_binary`] builds those on first use, with the profile
//! and into the target directory of the running test, so `cargo test --workspace` on a fresh
//! clone needs no step before it. Cargo's own lock on the target directory serialises concurrent
//! builds from several test processes; within one process the build runs once.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The packages whose binaries tests start: `adapter` (and `calendly`), `meeting-service`,
/// `migration`.
const PACKAGES: [&str; 4] = ["adapter", "meeting-service", "migration", "calendly-cli"];

/// Where a binary of this workspace is, after building it (once per process) with the running
/// test's profile and target directory.
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(build)
        .as_ref()
        .unwrap_or_else(|error| panic!("{error}"));
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// The profile directory the running executable is in (`<target>/<profile>`), read from its
/// path: test executables live in `<target>/<profile>/deps`, binaries in `<target>/<profile>`.
fn profile_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the test executable: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or("the test executable has no directory")?
        .to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

fn build() -> Result<PathBuf, String> {
    let dir = profile_dir()?;
    let (target_dir, profile) = target_and_profile(&dir)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--quiet")
        .arg("--bins")
        .arg("--profile")
        .arg(profile)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace_root());
    for package in PACKAGES {
        command.arg("-p").arg(package);
    }
    let status = command
        .status()
        .map_err(|e| format!("running cargo to build {PACKAGES:?}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building {PACKAGES:?} failed ({status}); see cargo's output above"
        ));
    }
    Ok(dir)
}

/// `<target>/debug` is the `dev` profile; any other directory is named after its profile.
fn target_and_profile(profile_dir: &Path) -> Result<(&Path, String), String> {
    let name = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} names no profile", profile_dir.display()))?;
    let target = profile_dir
        .parent()
        .ok_or_else(|| format!("{} has no target directory", profile_dir.display()))?;
    let profile = if name == "debug" { "dev" } else { name };
    Ok((target, profile.to_owned()))
}

/// The workspace's root directory (this crate's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_directory_is_the_dev_profile_and_others_keep_their_name() {
        let (target, profile) = target_and_profile(Path::new("/t/debug")).expect("debug");
        assert_eq!((target, profile.as_str()), (Path::new("/t"), "dev"));
        let (_, profile) = target_and_profile(Path::new("/t/release")).expect("release");
        assert_eq!(profile, "release");
    }
}
