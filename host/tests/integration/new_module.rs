//! `scripts/new-module.sh` (what `make new-module` runs): into a minimal
//! workspace (a copy of `module_api` and a root `Cargo.toml`), it makes a
//! module crate that builds and passes its own tests, and it refuses bad,
//! built-in and existing names without touching anything.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{temp_dir, workspace};

/// Longest the module's offline build and test may take (its first run
/// compiles module_api's dependencies into its own target directory).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// A root `Cargo.toml` with what the template's manifest inherits.
const ROOT_TOML: &str = r#"[workspace]
resolver = "2"
members = [
    "module_api",
]

[workspace.package]
edition = "2021"

[workspace.lints.clippy]
undocumented_unsafe_blocks = "deny"
"#;

/// A scratch workspace holding a copy of module_api, the path the
/// template's dependency names (`../../module_api` from `modules/NAME`).
fn scratch_workspace() -> PathBuf {
    let dir = temp_dir("new-module");
    fs::write(dir.join("Cargo.toml"), ROOT_TOML).unwrap();
    // The repository's lock file pins the same dependency versions, all
    // already in the local registry: the build needs no network.
    fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    copy_tree(&workspace().join("module_api"), &dir.join("module_api"));
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn new_module(args: &[&str]) -> Output {
    Command::new(workspace().join("scripts/new-module.sh"))
        .args(args)
        .output()
        .expect("run scripts/new-module.sh")
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = fs::read(&path).unwrap();
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

/// Waits for `child` at most `limit`; kills it past that.
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "cargo took over {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn makes_a_module_that_builds_and_passes_its_tests() {
    let ws = scratch_workspace();
    let out = new_module(&["hello_mod", "--dest", ws.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "new-module failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let root = fs::read_to_string(ws.join("Cargo.toml")).unwrap();
    assert!(
        root.contains("    \"module_api\",\n    \"modules/hello_mod\",\n]"),
        "{root}"
    );
    let crate_dir = ws.join("modules/hello_mod");
    let files = snapshot(&crate_dir);
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.strip_prefix(&crate_dir).unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["Cargo.toml", "src/lib.rs", "tests/module.rs"]);
    for (path, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("template_module"), "{}", path.display());
    }
    let manifest = fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"hello_mod\""), "{manifest}");
    let lib = fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    assert!(lib.contains("\"/hello_mod/\""), "{lib}");
    // Nothing but the module_api copy, the module and the root were made
    // (no scratch directory left in modules/).
    let modules: Vec<_> = fs::read_dir(ws.join("modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(modules, ["hello_mod"]);

    // The new crate's own tests (through module_api::testing) pass,
    // offline. Its target directory sits in the repository's, so runs
    // after the first reuse the compiled dependencies.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = workspace().join("target/new-module-check");
    let child = Command::new(cargo)
        .args(["test", "--offline", "-p", "hello_mod"])
        .current_dir(&ws)
        .env("CARGO_TARGET_DIR", &target)
        // On a fresh clone (CI) this builds module_api's dependencies from
        // scratch, the longest test of the suite: no debug info (a large
        // part of that work, read by nobody) and no incremental state.
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .env("CARGO_PROFILE_TEST_DEBUG", "false")
        .env("CARGO_INCREMENTAL", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo");
    let out = wait_bounded(child, BUILD_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo test -p hello_mod failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("test greets ... ok"),
        "the template's tests did not run:\n{stdout}"
    );
    let _ = fs::remove_dir_all(&ws);
}

#[test]
fn refuses_bad_builtin_and_existing_names() {
    let ws = scratch_workspace();
    let dest = ws.to_str().unwrap();
    fs::create_dir_all(ws.join("modules/taken")).unwrap();
    let before = snapshot(&ws);
    for (name, why) in [
        ("Hello", "not a module name"),
        ("9lives", "not a module name"),
        ("has-dash", "not a module name"),
        ("a23456789012345678901234567890123", "not a module name"),
        ("", "usage"),
        ("http", "built-in module"),
        ("webapp", "built-in module"),
        ("template_module", "built-in module"),
        ("taken", "already exists"),
    ] {
        let out = new_module(&[name, "--dest", dest]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name:?} was accepted");
        assert!(err.contains(why), "{name:?}: {err}");
    }
    assert!(
        snapshot(&ws) == before,
        "a refused name changed the workspace"
    );
    let _ = fs::remove_dir_all(&ws);
}
