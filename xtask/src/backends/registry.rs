//! A registry an existing cluster pulls the images from (`--registry`).

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use crate::phases::Command;

/// A registry given as `host[:port][/path]`, e.g. `localhost:5000` or `registry.example.com/team`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// `host[:port]`.
    pub host: String,
    /// The path under the host, without slashes at either end; may be empty.
    pub path: String,
}

impl Registry {
    pub fn parse(text: &str) -> anyhow::Result<Registry> {
        let text = text.trim_end_matches('/');
        if text.contains("://") {
            anyhow::bail!("--registry takes host[:port][/path] without a scheme, e.g. localhost:5000, not `{text}`");
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || "-._:/".contains(c);
        if text.is_empty() || text.starts_with('/') || !text.chars().all(valid) {
            anyhow::bail!("invalid --registry `{text}`: use host[:port][/path], e.g. localhost:5000");
        }
        let (host, path) = text.split_once('/').unwrap_or((text, ""));
        // Docker's rule: anything else is read as a user on Docker Hub.
        if !(host.contains(['.', ':']) || host == "localhost") {
            anyhow::bail!(
                "--registry `{text}` does not start with a registry host: use e.g. {host}.example.com or {host}:5000"
            );
        }
        Ok(Registry { host: host.to_owned(), path: path.to_owned() })
    }

    /// Whether the host is this machine: then the registry speaks plain HTTP, as docker assumes.
    pub fn is_local(&self) -> bool {
        let name = self.host.rsplit_once(':').map_or(self.host.as_str(), |(name, _)| name);
        name == "localhost" || name == "127.0.0.1"
    }

    /// Where images are named: `host[:port][/path]`.
    pub fn address(&self) -> String {
        if self.path.is_empty() { self.host.clone() } else { format!("{}/{}", self.host, self.path) }
    }

    /// The registry API's base URL, `http` for this machine and `https` elsewhere.
    pub fn api(&self) -> String {
        let scheme = if self.is_local() { "http" } else { "https" };
        format!("{scheme}://{}/v2/", self.host)
    }

    /// Where the service images go: `<address>/remedy`.
    pub fn image_repo(&self) -> String {
        format!("{}/remedy", self.address())
    }

    /// A probe that succeeds when the registry has `image` (`<host>/<repository>:<tag>`). curl,
    /// not the engine: podman 4.3 cannot inspect a plain-HTTP registry.
    pub fn has(&self, image: &str) -> Command {
        let name = image.strip_prefix(&format!("{}/", self.host)).unwrap_or(image);
        let (name, tag) = name.rsplit_once(':').unwrap_or((name, "latest"));
        let url = format!("{}{name}/manifests/{tag}", self.api());
        let quiet = ["--fail", "--silent", "--show-error", "--head", "--output", "/dev/null", "--max-time", "10"];
        Command::new("curl", quiet.into_iter().chain(["--header", MANIFEST_TYPES, &url]))
    }
}

/// What a manifest request accepts: docker's and OCI's images and lists (docker and podman push
/// either).
const MANIFEST_TYPES: &str = "Accept: application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json";

impl Registry {
    /// The registry answers its API's base URL: 200, or 401 when it wants credentials (the engine
    /// has them).
    pub fn answers(&self) -> anyhow::Result<()> {
        let sh = Shell::new()?;
        let url = self.api();
        let status = "%{http_code}";
        let out = cmd!(sh, "curl --silent --show-error --output /dev/null --max-time 5 --write-out {status} {url}")
            .quiet()
            .ignore_status()
            .output()
            .context("cannot run curl")?;
        let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if code == "200" || code == "401" {
            return Ok(());
        }
        let why = match String::from_utf8_lossy(&out.stderr).trim() {
            "" => format!("HTTP {code}"),
            // `curl: (7) Failed to connect to ...`: the message without curl's exit code.
            err => {
                let line = err.lines().last().unwrap_or(err).trim_start_matches("curl: ");
                line.split_once(") ").filter(|(code, _)| code.starts_with('(')).map_or(line, |(_, msg)| msg).to_owned()
            }
        };
        let address = self.address();
        bail!("registry {address} does not answer at {url} ({why}): start it, or pass the right --registry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_host_port_and_path() {
        let r = Registry::parse("registry.example.com/team/").unwrap();
        assert_eq!((r.host.as_str(), r.path.as_str()), ("registry.example.com", "team"));
        assert_eq!(r.image_repo(), "registry.example.com/team/remedy");
        assert_eq!(r.api(), "https://registry.example.com/v2/");
        let r = Registry::parse("localhost:5000").unwrap();
        assert!(r.is_local());
        assert_eq!(r.api(), "http://localhost:5000/v2/");
        assert!(Registry::parse("127.0.0.1:40123").unwrap().is_local());
        assert!(!Registry::parse("localhost.example.com").unwrap().is_local());
        for bad in ["", "http://localhost:5000", "team/images", "local host:5000", "/x"] {
            assert!(Registry::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
