//! The services and their environments as data (`services.toml`), checked when read.
//!
//! A service is one declaration: the binaries it builds into images, whether it needs the CRDs,
//! the infrastructure it runs on, its deployments with the tasks each waits for, what its specs
//! wait for, and the host ports its specs use. Nothing else in the xtask names a service.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use anyhow::{bail, format_err};
use serde::Deserialize;

/// The declarations this workspace's environments are made from.
pub fn catalog() -> &'static Catalog {
    static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
        Catalog::parse(include_str!("services.toml")).unwrap_or_else(|err| panic!("xtask/src/catalog/{err}"))
    });
    &CATALOG
}

/// Every declared service, in declaration order.
#[derive(Debug)]
pub struct Catalog {
    services: Vec<Service>,
}

/// One service's environment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Its crate, binary, manifest, E2E suite and namespace are named after it.
    pub name: String,
    /// What it is, in a line.
    pub about: String,
    /// The binaries built into images, each from `services/<bin>/Dockerfile`.
    pub images: Vec<String>,
    /// Whether its environment needs the Remedy CRDs (`test/manifests/crds/`).
    #[serde(default)]
    pub crds: bool,
    #[serde(default)]
    pub infra: Vec<Infra>,
    /// Its own deployments, in order, each from `test/manifests/<name>.yaml`.
    #[serde(default)]
    pub deploy: Vec<Deploy>,
    /// The tasks the specs wait for.
    pub specs_after: Vec<String>,
    /// The deployments whose `http` port the specs reach from the host, and that host port.
    #[serde(default)]
    ports: BTreeMap<String, u16>,
}

/// Infrastructure the building blocks know how to bring up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Infra {
    /// PostgreSQL with generated credentials, the schema migrations Job, then datastorage.
    Datastorage,
    Redis,
}

impl Infra {
    /// What it deploys, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Infra::Datastorage => "PostgreSQL, migrations, datastorage",
            Infra::Redis => "Redis",
        }
    }

    /// The deployments it makes that can be exposed.
    fn deployments(self) -> &'static [&'static str] {
        match self {
            Infra::Datastorage => &["postgresql", "datastorage"],
            Infra::Redis => &["redis"],
        }
    }
}

/// A deployment and the tasks it waits for besides the images its manifest names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub name: String,
    #[serde(default)]
    pub after: Vec<String>,
}

/// A Service port the specs reach from the host. On Kind the node port is fixed and mapped to
/// the host port by the cluster's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    pub service: String,
    pub port: &'static str,
    pub node_port: u16,
    pub host_port: u16,
}

impl Exposed {
    /// The run variable that holds the URL, and the environment variable the specs read.
    pub fn var(&self) -> String {
        format!("URL_{}", self.service.to_uppercase())
    }
}

/// Node ports are host ports plus this, so both are unique when the host ports are.
const NODE_PORT_OFFSET: u16 = 12000;

impl Service {
    /// The ports its specs reach, by host port.
    pub fn exposed(&self) -> Vec<Exposed> {
        let mut exposed: Vec<Exposed> = self
            .ports
            .iter()
            .map(|(service, &host_port)| Exposed {
                service: service.clone(),
                port: "http",
                node_port: host_port + NODE_PORT_OFFSET,
                host_port,
            })
            .collect();
        exposed.sort_by_key(|e| e.host_port);
        exposed
    }

    /// The block of 100 host ports its ports lie in, e.g. 180 for 18000 to 18099.
    fn port_block(&self) -> Option<u16> {
        self.ports.values().next().map(|port| port / 100)
    }

    /// Every deployment its environment makes.
    fn deployments(&self) -> impl Iterator<Item = &str> {
        let infra = self.infra.iter().flat_map(|i| i.deployments().iter().copied());
        infra.chain(self.deploy.iter().map(|d| d.name.as_str()))
    }
}

impl Catalog {
    /// Reads and checks `services.toml`: unique names, each service's ports in a block of 100
    /// host ports of its own, node ports in the NodePort range, and only deployments it makes
    /// exposed. The edges are checked when a plan is made.
    pub fn parse(text: &str) -> anyhow::Result<Catalog> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            service: Vec<Service>,
        }
        let file: File = toml::from_str(text).map_err(|err| {
            let line = err.span().map(|span| text[..span.start].lines().count().max(1));
            let at = line.map(|l| format!(" line {l}:")).unwrap_or_default();
            format_err!("services.toml:{at} {}", err.message().trim().replace('\n', " "))
        })?;
        let mut names = BTreeSet::new();
        let mut blocks: BTreeMap<u16, &str> = BTreeMap::new();
        for service in &file.service {
            let name = &service.name;
            let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
            if name.is_empty() || name.len() > 40 || !name.chars().all(valid) {
                bail!("services.toml: service `{name}`: a name is 1 to 40 lowercase letters and digits");
            }
            if ["all", "gc"].contains(&name.as_str()) || !names.insert(name.as_str()) {
                bail!("services.toml: service `{name}` is declared twice, or is a reserved name (`all`, `gc`)");
            }
            let deployments: BTreeSet<&str> = service.deployments().collect();
            for (exposed, &port) in &service.ports {
                if !deployments.contains(exposed.as_str()) {
                    bail!("services.toml: service `{name}` exposes `{exposed}`, which its environment does not deploy");
                }
                let node_port = port.checked_add(NODE_PORT_OFFSET).filter(|p| (30000..=32767).contains(p));
                if node_port.is_none() {
                    bail!(
                        "services.toml: service `{name}`: host port {port} would make node port {port} + \
                         {NODE_PORT_OFFSET}, outside the NodePort range 30000-32767"
                    );
                }
                if Some(port / 100) != service.port_block() {
                    bail!("services.toml: service `{name}`: its host ports are not in one block of 100");
                }
            }
            if let Some(block) = service.port_block()
                && let Some(other) = blocks.insert(block, name)
            {
                bail!("services.toml: services `{other}` and `{name}` share the host ports {block}00-{block}99");
            }
        }
        Ok(Catalog { services: file.service })
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn get(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.services.iter().map(|s| s.name.as_str()).collect()
    }

    /// Every service's exposed ports.
    pub fn exposed(&self) -> Vec<Exposed> {
        self.services.iter().flat_map(Service::exposed).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_catalog_is_valid() {
        let names = catalog().names();
        assert_eq!(
            names,
            ["gateway", "signalprocessing", "datastorage", "remediationorchestrator", "workflowexecution"]
        );
    }

    #[test]
    fn ports_are_unique_across_environments() {
        let all = catalog().exposed();
        let mut host: Vec<u16> = all.iter().map(|e| e.host_port).collect();
        let mut node: Vec<u16> = all.iter().map(|e| e.node_port).collect();
        host.sort();
        host.dedup();
        node.sort();
        node.dedup();
        assert_eq!((host.len(), node.len()), (all.len(), all.len()), "{all:?}");
        assert!(node.iter().all(|p| (30000..=32767).contains(p)), "NodePort range: {node:?}");
    }

    #[test]
    fn the_port_table_is_the_one_the_environments_always_had() {
        let ports = |name: &str| -> Vec<(String, u16, u16)> {
            catalog().get(name).unwrap().exposed().into_iter().map(|e| (e.service, e.host_port, e.node_port)).collect()
        };
        assert_eq!(ports("gateway"), [("gateway".to_owned(), 18080, 30080), ("datastorage".to_owned(), 18081, 30081)]);
        assert_eq!(ports("workflowexecution"), [("datastorage".to_owned(), 18481, 30481)]);
    }

    const ONE: &str = "[[service]]\nname = \"a\"\nabout = \"x\"\nimages = [\"a\"]\ndeploy = [{ name = \"a\" }]\n\
                       specs_after = [\"a\"]\nports = { a = 19080 }\n";

    fn error(text: &str) -> String {
        Catalog::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn colliding_or_misplaced_ports_are_refused() {
        let twice = format!("{ONE}{}", ONE.replace("\"a\"", "\"b\"").replace("{ a = 19080 }", "{ b = 19081 }"));
        assert_eq!(error(&twice), "services.toml: services `a` and `b` share the host ports 19000-19099");
        let far = ONE
            .replace("ports = { a = 19080 }", "ports = { a = 19080, datastorage = 19181 }\ninfra = [\"datastorage\"]");
        assert_eq!(error(&far), "services.toml: service `a`: its host ports are not in one block of 100");
        assert!(error(&ONE.replace("19080", "25000")).contains("outside the NodePort range"));
        assert_eq!(
            error(&ONE.replace("{ a = 19080 }", "{ redis = 19080 }")),
            "services.toml: service `a` exposes `redis`, which its environment does not deploy"
        );
    }

    #[test]
    fn names_and_fields_are_checked() {
        assert!(error(&format!("{ONE}{ONE}")).contains("declared twice"));
        assert!(error(&ONE.replace("name = \"a\"", "name = \"all\"")).contains("reserved name"));
        assert!(error(&ONE.replace("name = \"a\"", "name = \"gc\"")).contains("reserved name"));
        assert!(error(&ONE.replace("name = \"a\"", "name = \"A b\"")).contains("lowercase letters and digits"));
        let typo = error(&ONE.replace("specs_after", "spec_after"));
        assert!(typo.starts_with("services.toml: line ") && typo.contains("unknown field `spec_after`"), "{typo}");
        assert!(error(&format!("{ONE}infra = [\"memcached\"]\n")).contains("unknown variant `memcached`"));
    }
}
