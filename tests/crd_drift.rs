//! The CRDs under crds/ (and the Helm chart's copy) are exactly what the
//! Rust types generate; any drift fails here.

use std::{fs, path::Path, process::Command};

#[test]
fn lethe_crd_equals_committed_files_byte_for_byte() {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe")).arg("crd").output().expect("run lethe crd");
    assert!(out.status.success(), "lethe crd failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<_> = fs::read_dir("crds")
        .expect("crds/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let committed: String = files.iter().map(|f| fs::read_to_string(f).expect("readable CRD")).collect();
    assert!(out.stdout == committed.as_bytes(), "crds/ differs from `lethe crd`; regenerate with `make crds`");
    let generated = lethe::api::crds();
    assert_eq!(files.len(), generated.len(), "one file per CRD");
    for (name, crd) in generated {
        let on_disk = fs::read_to_string(Path::new("crds").join(&name)).expect("file per CRD");
        assert_eq!(on_disk, lethe::api::crd_document(&crd).unwrap(), "{name}");
    }
}

#[test]
fn every_crd_has_status_printer_columns_short_names_and_cel_where_cross_field_rules_exist() {
    for (name, crd) in lethe::api::crds() {
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{name}: status subresource");
        let cols = v.additional_printer_columns.as_ref().expect("printer columns");
        assert!(cols.iter().any(|c| c.name == "Age"), "{name}: Age column");
        assert!(cols.len() >= 4, "{name}: useful columns");
        let short = crd.spec.names.short_names.clone().unwrap_or_default();
        assert!(!short.is_empty(), "{name}: short name");
        for s in &short {
            // Built-in short names Lethe must not shadow.
            assert!(
                ![
                    "ds", "deploy", "po", "svc", "cm", "ns", "pv", "pvc", "sa", "rs", "sts", "ing", "ep", "no", "ev",
                    "cj"
                ]
                .contains(&s.as_str()),
                "{name}: {s}"
            );
        }
        let schema = serde_json::to_string(&v.schema).unwrap();
        assert!(schema.contains("x-kubernetes-validations"), "{name}: CEL rules");
        // Conditions merge per type under server-side apply.
        assert!(schema.contains(r#""x-kubernetes-list-map-keys":["type"]"#), "{name}: conditions list-map");
    }
}

#[test]
fn the_resource_reference_is_generated_from_the_crds() {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe")).arg("reference").output().expect("run lethe reference");
    assert!(out.status.success());
    let committed = fs::read_to_string("docs/reference.md").expect("docs/reference.md exists");
    assert!(
        out.stdout == committed.as_bytes(),
        "docs/reference.md differs from `lethe reference`; regenerate with `make docs`"
    );
    // Every kind and every spec field of the schemas is in it.
    for (_, crd) in lethe::api::crds() {
        assert!(committed.contains(&format!("## {}\n", crd.spec.names.kind)));
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for field in spec.as_object().unwrap().keys() {
            assert!(committed.contains(&format!("| `spec.{field}` |")), "{}: spec.{field}", crd.spec.names.kind);
        }
    }
}
