//! SignalProcessing: a controller classifying signals; it audits to datastorage, which it
//! retries, so it starts without waiting for datastorage.

use super::{Env, ids};

pub(super) fn tasks(env: &mut Env<'_>) {
    env.cluster();
    env.crds();
    env.images(&["signalprocessing", "datastorage"]);
    env.datastorage();
    env.service("signalprocessing", &[ids::NAMESPACE, ids::CRDS]);
    env.specs("signalprocessing", &["signalprocessing", "datastorage"]);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{deps_of, kind};
    use super::super::{Service, ids};

    #[test]
    fn controller_does_not_wait_for_datastorage() {
        let plan = Service::Signalprocessing.plan(&kind()).unwrap();
        assert_eq!(deps_of(&plan, "signalprocessing"), ["crds", "load-image-signalprocessing", "namespace"]);
        assert_eq!(deps_of(&plan, ids::SPECS), ["build-specs", "datastorage", "signalprocessing"]);
    }
}
