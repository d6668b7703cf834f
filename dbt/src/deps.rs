//! `rainbow deps`: installs a project's packages (`packages.yml` or `dependencies.yml`) into
//! its `packages-install-path` (default `dbt_packages/`), as `dbt deps` does, and writes
//! `package-lock.yml`. Source: docs.getdbt.com/docs/build/packages.
//!
//! - `local: path` — a symbolic link to the directory (relative to the project);
//! - `git: url` with `revision` (tag, branch or commit; default the remote's HEAD) and
//!   `subdirectory` — cloned with the `git` command (a `file://` URL works offline);
//! - `package: owner/name` with `version` (exact, or a list of ranges such as
//!   `[">=1.0.0", "<2.0.0"]`) — resolved on the package hub (hub.getdbt.com) to the highest
//!   matching version, then cloned from its repository at that tag; without the network it
//!   fails saying so.
//!
//! Packages' own `packages.yml` are installed too, flat (one copy per name, the first wins).
//! When `package-lock.yml` was written for the same `packages.yml` (its `sha1_hash`), the
//! locked versions and commits are installed instead of resolving again.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;

use serde_json::Value as Json;

use crate::error::DbtError;
use crate::project::{ProjectFile, parse_yaml};

/// The package hub's API root (`RAINBOW_DBT_HUB` overrides it).
pub const HUB: &str = "https://hub.getdbt.com/api/v1";

/// One installed package, as the lock file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Its name (`name:` of its dbt_project.yml): the directory under the install path.
    pub name: String,
    /// The lock entry: `package`+`version`, `git`+`revision` (a commit), or `local`.
    pub lock: Json,
}

fn fail(path: &Path, message: impl Into<String>) -> DbtError {
    DbtError::Project {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn sha1_hex(text: &str) -> String {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn git(args: &[&str], dir: Option<&Path>, spec: &Path) -> Result<String, DbtError> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    let out = cmd
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| {
            fail(
                spec,
                format!("cannot run `git` (needed for git packages): {e}"),
            )
        })?;
    if !out.status.success() {
        return Err(fail(
            spec,
            format!(
                "`git {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn package_name(dir: &Path, spec: &Path) -> Result<String, DbtError> {
    let file = dir.join("dbt_project.yml");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        fail(
            spec,
            format!("{} has no readable dbt_project.yml: {e}", dir.display()),
        )
    })?;
    let project: ProjectFile = parse_yaml(&text, &file)?;
    Ok(project.name)
}

/// Clones `url` at `revision` into a new directory under `install`; returns it, the commit and
/// the package directory (its `subdirectory`).
fn clone(
    install: &Path,
    url: &str,
    revision: Option<&str>,
    subdirectory: Option<&str>,
    spec: &Path,
) -> Result<(PathBuf, String, PathBuf), DbtError> {
    let tmp = install.join(format!(".rainbow-clone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let tmp_text = tmp.to_string_lossy().into_owned();
    git(&["clone", "--quiet", url, &tmp_text], None, spec)?;
    if let Some(rev) = revision {
        git(&["checkout", "--quiet", rev], Some(&tmp), spec)?;
    }
    let commit = git(&["rev-parse", "HEAD"], Some(&tmp), spec)?;
    let dir = match subdirectory {
        Some(s) => tmp.join(s),
        None => tmp.clone(),
    };
    Ok((tmp, commit, dir))
}

/// The highest version in `available` that every constraint of `wanted` allows.
fn pick_version(wanted: &Json, available: &[String]) -> Option<String> {
    let constraints: Vec<String> = match wanted {
        Json::String(s) => vec![s.clone()],
        Json::Array(items) => items
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let reqs: Vec<semver::VersionReq> = constraints
        .iter()
        .map(|c| {
            let c = c.trim();
            // A bare version is exact (dbt's meaning), not semver's caret.
            let c = if c.starts_with(|ch: char| ch.is_ascii_digit()) {
                format!("={c}")
            } else {
                c.to_owned()
            };
            semver::VersionReq::parse(&c)
        })
        .collect::<Result<_, _>>()
        .ok()?;
    available
        .iter()
        .filter_map(|v| semver::Version::parse(v).ok().map(|p| (p, v)))
        .filter(|(p, _)| p.pre.is_empty() && reqs.iter().all(|r| r.matches(p)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v.clone())
}

/// Fetches a package's index from the hub: the URL in; the body, `None` when the hub has no
/// such package, or why it could not be reached. The binary supplies it (HTTP is the binary's
/// and the servers' business, not this library's).
pub type HubIndex = dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send>>
    + Send
    + Sync;

/// Resolves a hub package to (git URL, tag, version).
async fn resolve_hub(
    package: &str,
    version: Option<&Json>,
    spec: &Path,
    hub_index: &HubIndex,
) -> Result<(String, String, String), DbtError> {
    // `RAINBOW_DBT_HUB` points elsewhere (a mirror; the tests, at a closed port).
    let hub = std::env::var("RAINBOW_DBT_HUB").unwrap_or_else(|_| HUB.to_owned());
    let url = format!("{hub}/{package}.json");
    let body = hub_index(url.clone()).await.map_err(|e| {
        fail(
            spec,
            format!(
                "package `{package}`: the dbt package hub is not reachable ({url}: {e}); hub packages need the network — use a `git:` URL you can reach or a `local:` path"
            ),
        )
    })?;
    let Some(body) = body else {
        return Err(fail(spec, format!("package `{package}` is not on the hub")));
    };
    let index: Json = serde_json::from_str(&body).map_err(|e| {
        fail(
            spec,
            format!("package `{package}`: the hub's answer is not JSON: {e}"),
        )
    })?;
    let versions = index["versions"].as_object().cloned().unwrap_or_default();
    let available: Vec<String> = versions.keys().cloned().collect();
    let wanted = version.cloned().unwrap_or(Json::String(">=0.0.0".into()));
    let chosen = pick_version(&wanted, &available).ok_or_else(|| {
        fail(
            spec,
            format!(
                "package `{package}`: no version matches {wanted} (available: {})",
                available.join(", ")
            ),
        )
    })?;
    let tarball = versions[&chosen]["downloads"]["tarball"]
        .as_str()
        .unwrap_or_default();
    // https://codeload.github.com/<owner>/<repo>/tar.gz/<tag>
    let parts: Vec<&str> = tarball.trim_start_matches("https://").split('/').collect();
    match parts.as_slice() {
        ["codeload.github.com", owner, repo, "tar.gz", tag] => Ok((
            format!("https://github.com/{owner}/{repo}.git"),
            (*tag).to_owned(),
            chosen,
        )),
        _ => Err(fail(
            spec,
            format!("package `{package}` {chosen}: cannot read its download `{tarball}`"),
        )),
    }
}

/// Installs the packages of the project at `root` (hub indexes fetched with `hub_index`);
/// returns what was installed. Errors name the spec file and the package.
pub async fn install(root: &Path, hub_index: &HubIndex) -> Result<Vec<Installed>, DbtError> {
    let project_path = root.join("dbt_project.yml");
    let project: ProjectFile = parse_yaml(
        &std::fs::read_to_string(&project_path).map_err(|source| DbtError::Io {
            path: project_path.clone(),
            source,
        })?,
        &project_path,
    )?;
    let Some(spec) = ["packages.yml", "dependencies.yml"]
        .iter()
        .map(|f| root.join(f))
        .find(|p| p.is_file())
    else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(&spec).map_err(|source| DbtError::Io {
        path: spec.clone(),
        source,
    })?;
    let doc: Json = parse_yaml(&text, &spec)?;
    if let Some(unknown) = doc
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .find(|k| !["packages", "projects"].contains(&k.as_str()))
    {
        return Err(fail(
            &spec,
            format!("unknown key `{unknown}` (expected `packages:`)"),
        ));
    }
    let hash = sha1_hex(&text);
    // A lock written for this very spec pins what to install.
    let lock_path = root.join("package-lock.yml");
    let locked: Option<Vec<Json>> = std::fs::read_to_string(&lock_path)
        .ok()
        .and_then(|t| serde_norway::from_str::<Json>(&t).ok())
        .filter(|l| l["sha1_hash"].as_str() == Some(hash.as_str()))
        .and_then(|l| l["packages"].as_array().cloned());
    let wanted: Vec<(Json, PathBuf)> = locked
        .unwrap_or_else(|| doc["packages"].as_array().cloned().unwrap_or_default())
        .into_iter()
        .map(|p| (p, root.to_owned()))
        .collect();
    // Installed into a staging directory that replaces the install path only when every
    // package is in: a failure leaves the packages installed before as they were.
    let final_dir = root.join(&project.packages_install_path);
    let install = root.join(format!(
        "{}.rainbow-staging",
        project.packages_install_path.trim_end_matches('/')
    ));
    if install.exists() {
        std::fs::remove_dir_all(&install).map_err(|source| DbtError::Io {
            path: install.clone(),
            source,
        })?;
    }
    std::fs::create_dir_all(&install).map_err(|source| DbtError::Io {
        path: install.clone(),
        source,
    })?;
    let mut queue = std::collections::VecDeque::from(wanted);
    let mut installed: Vec<Installed> = Vec::new();
    // Each entry with the directory its paths are relative to and the package requiring it.
    let mut required_by: std::collections::HashMap<String, String> = Default::default();
    while let Some((entry, base)) = queue.pop_front() {
        let requirer = required_by.get(&entry.to_string()).cloned();
        let (name, lock, dir) = if let Some(local) = entry.get("local").and_then(Json::as_str) {
            let source = base.join(local);
            let source = source
                .canonicalize()
                .map_err(|e| fail(&spec, format!("local package `{local}`: {e}")))?;
            let name = package_name(&source, &spec)?;
            if installed.iter().any(|i| i.name == name) {
                continue;
            }
            let target = install.join(&name);
            #[cfg(unix)]
            std::os::unix::fs::symlink(&source, &target).map_err(|source| DbtError::Io {
                path: target.clone(),
                source,
            })?;
            #[cfg(not(unix))]
            return Err(fail(&spec, "local packages need symbolic links (unix)"));
            (name, serde_json::json!({ "local": local }), source)
        } else {
            let (url, revision, lock_base) = if let Some(url) =
                entry.get("git").and_then(Json::as_str)
            {
                let revision = entry
                    .get("revision")
                    .and_then(Json::as_str)
                    .map(str::to_owned);
                (url.to_owned(), revision, serde_json::json!({ "git": url }))
            } else if let Some(package) = entry.get("package").and_then(Json::as_str) {
                let (url, tag, version) =
                    resolve_hub(package, entry.get("version"), &spec, hub_index)
                        .await
                        .map_err(|e| match (&requirer, e) {
                            (Some(by), DbtError::Project { path, message }) => DbtError::Project {
                                path,
                                message: format!("{message} (required by package `{by}`)"),
                            },
                            (_, e) => e,
                        })?;
                (
                    url,
                    Some(tag),
                    serde_json::json!({ "package": package, "version": version }),
                )
            } else {
                return Err(fail(
                    &spec,
                    format!("a package entry is neither `package:`, `git:` nor `local:`: {entry}"),
                ));
            };
            let subdirectory = entry.get("subdirectory").and_then(Json::as_str);
            let (tmp, commit, dir) =
                clone(&install, &url, revision.as_deref(), subdirectory, &spec)?;
            let name = package_name(&dir, &spec)?;
            if installed.iter().any(|i| i.name == name) {
                let _ = std::fs::remove_dir_all(&tmp);
                continue;
            }
            let target = install.join(&name);
            std::fs::rename(&dir, &target).map_err(|source| DbtError::Io {
                path: target.clone(),
                source,
            })?;
            let _ = std::fs::remove_dir_all(&tmp);
            let mut lock = lock_base;
            if lock.get("git").is_some() {
                lock["revision"] = Json::from(commit);
                if let Some(s) = subdirectory {
                    lock["subdirectory"] = Json::from(s);
                }
            }
            (name, lock, target)
        };
        // The package's own packages, installed flat after it.
        for f in ["packages.yml", "dependencies.yml"] {
            let p = dir.join(f);
            if let Ok(t) = std::fs::read_to_string(&p) {
                let d: Json = parse_yaml(&t, &p)?;
                for e in d["packages"].as_array().into_iter().flatten() {
                    required_by
                        .entry(e.to_string())
                        .or_insert_with(|| name.clone());
                    queue.push_back((e.clone(), dir.clone()));
                }
            }
        }
        installed.push(Installed { name, lock });
    }
    // Swapped in: the old packages set aside, the new ones moved in (on failure the old ones
    // are moved back), then the old ones deleted.
    let old = root.join(format!(
        "{}.rainbow-old",
        project.packages_install_path.trim_end_matches('/')
    ));
    let _ = std::fs::remove_dir_all(&old);
    let had_old = final_dir.exists();
    if had_old {
        std::fs::rename(&final_dir, &old).map_err(|source| DbtError::Io {
            path: final_dir.clone(),
            source,
        })?;
    }
    if let Err(source) = std::fs::rename(&install, &final_dir) {
        if had_old {
            let _ = std::fs::rename(&old, &final_dir);
        }
        return Err(DbtError::Io {
            path: final_dir.clone(),
            source,
        });
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    let lock = serde_json::json!({
        "packages": installed.iter().map(|i| i.lock.clone()).collect::<Vec<_>>(),
        "sha1_hash": hash,
    });
    let lock_text = serde_norway::to_string(&lock)
        .map_err(|e| fail(&lock_path, format!("writing the lock: {e}")))?;
    std::fs::write(&lock_path, lock_text).map_err(|source| DbtError::Io {
        path: lock_path.clone(),
        source,
    })?;
    Ok(installed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_pick_the_highest_match() {
        let available: Vec<String> = ["0.9.6", "1.1.1", "1.3.3", "2.0.0-rc1", "2.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let pick = |w: Json| pick_version(&w, &available);
        assert_eq!(
            pick(serde_json::json!([">=1.0.0", "<2.0.0"])),
            Some("1.3.3".into())
        );
        assert_eq!(pick(serde_json::json!("1.1.1")), Some("1.1.1".into()));
        assert_eq!(pick(serde_json::json!(">=0.1.0")), Some("2.0.1".into()));
        assert_eq!(pick(serde_json::json!("3.0.0")), None);
    }
}
