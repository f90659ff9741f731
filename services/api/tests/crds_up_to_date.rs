//! Fails when the checked-in CRD YAML differs from what the Rust types generate.

use std::path::Path;

#[test]
fn checked_in_crds_are_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(remedy_api::crdgen::CRD_DIR);
    let mut stale = Vec::new();
    for (name, want) in remedy_api::crdgen::render().expect("render CRDs") {
        let path = dir.join(&name);
        match std::fs::read_to_string(&path) {
            Ok(have) if have == want => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    assert!(
        stale.is_empty(),
        "checked-in CRDs in {} are stale ({}); run `cargo xtask codegen`",
        remedy_api::crdgen::CRD_DIR,
        stale.join(", ")
    );
}

#[test]
fn crds_are_v1_structural_and_namespaced_with_status() {
    for crd in remedy_api::crd::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        assert!(name.ends_with(".remedy.dev"), "{name}");
        assert_eq!(crd.spec.scope, "Namespaced", "{name}");
        assert_eq!(crd.spec.versions.len(), 1, "{name}");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{name} status");
        let schema = serde_json::to_value(&v.schema).unwrap();
        let text = schema.to_string();
        // Features a Kubernetes 1.20 API server does not know, or that make a schema non-structural.
        for banned in ["x-kubernetes-validations", "\"$ref\"", "\"anyOf\"", "\"oneOf\"", "\"allOf\""] {
            assert!(!text.contains(banned), "{name} schema contains {banned}");
        }
        assert_eq!(schema["openAPIV3Schema"]["type"], "object");
        // Kubernetes 1.20 reads an empty-string default as null and rejects the CRD.
        assert!(!text.contains("\"default\":\"\""), "{name} schema has an empty-string default");
    }
}
