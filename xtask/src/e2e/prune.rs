//! After a successful run, the engine keeps only the newest images of each repository the run
//! built, as Tilt's image pruning does: every source change makes a new content-hash tag, and
//! without this they would fill the disk. The run's own images are always kept; the engine
//! refuses to remove one a container uses.

use anyhow::Context;
use xshell::{Shell, cmd};

/// With the engine `program` (docker or podman), removes all but the `keep` newest tags of the
/// repository of each image in `current` (`repository:tag`), never a tag in `current`. Returns
/// the images removed.
pub fn prune(program: &str, current: &[String], keep: usize) -> anyhow::Result<Vec<String>> {
    let sh = Shell::new()?;
    let format = "{{.Tag}}";
    let mut removed = Vec::new();
    let mut repositories: Vec<&str> =
        current.iter().filter_map(|image| image.rsplit_once(':')).map(|(r, _)| r).collect();
    repositories.sort_unstable();
    repositories.dedup();
    for repository in repositories {
        // Both engines list the newest first.
        let tags = cmd!(sh, "{program} images --filter reference={repository} --format {format}")
            .quiet()
            .read()
            .with_context(|| format!("`{program} images --filter reference={repository}` failed"))?;
        let tags: Vec<&str> = tags.lines().collect();
        for tag in stale(&tags, repository, current, keep) {
            let image = format!("{repository}:{tag}");
            // In use by a container (a pod of another run, say): the engine refuses; keep it.
            if cmd!(sh, "{program} rmi {image}").quiet().ignore_stdout().ignore_stderr().run().is_ok() {
                removed.push(image);
            }
        }
    }
    Ok(removed)
}

/// Removes `images` from the Kind node container `node` as well (`crictl rmi`): kind turns the
/// node's image garbage collection off. Returns how many it removed.
pub fn from_node(program: &str, node: &str, images: &[String]) -> usize {
    let Ok(sh) = Shell::new() else { return 0 };
    let removed = |image: &&String| {
        cmd!(sh, "{program} exec {node} crictl rmi {image}").quiet().ignore_stdout().ignore_stderr().run().is_ok()
    };
    images.iter().filter(removed).count()
}

/// The tags beyond the `keep` newest (`tags` newest first), except those in `current`.
fn stale<'a>(tags: &[&'a str], repository: &str, current: &[String], keep: usize) -> Vec<&'a str> {
    let tags = tags.iter().copied().filter(|tag| !tag.is_empty() && *tag != "<none>");
    tags.skip(keep).filter(|tag| !current.contains(&format!("{repository}:{tag}"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_the_current_tags() {
        let tags = ["t5", "<none>", "t4", "t3", "t2", "t1"];
        let current = vec!["localhost/remedy/gateway:t2".to_owned(), "localhost/remedy/datastorage:t1".to_owned()];
        assert_eq!(stale(&tags, "localhost/remedy/gateway", &current, 3), ["t1"]);
        assert_eq!(stale(&tags, "localhost/remedy/gateway", &current, 1), ["t4", "t3", "t1"]);
        assert_eq!(stale(&tags, "localhost/remedy/datastorage", &current, 4), Vec::<&str>::new());
        assert_eq!(stale(&[], "localhost/remedy/gateway", &current, 1), Vec::<&str>::new());
    }
}
