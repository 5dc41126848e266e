//! Property tests over arbitrary input: the duration parser, the identifier
//! validator and `lethe validate` never panic, and never accept what is unsafe.

use lethe::api::{Duration, validate_identifier};
use lethe::validate::{Options, validate_str};
use proptest::prelude::*;

fn safe_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        && s.len() <= 63
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn duration_parser_never_panics(s in any::<String>()) {
        let _ = s.parse::<Duration>();
    }

    #[test]
    fn accepted_durations_are_positive_and_round_trip(s in "[0-9]{1,4}(y|mo|w|d|h|m|s)([0-9]{1,3}(d|h))?|P[0-9]{0,3}Y?[0-9]{0,3}M?[0-9]{0,3}D?") {
        if let Ok(d) = s.parse::<Duration>() {
            prop_assert!(d.months() > 0 || d.seconds() > 0);
            prop_assert_eq!(d.as_str(), s.as_str());
            let now = chrono::Utc::now();
            prop_assert!(d.before(now).unwrap() < now);
        }
    }

    #[test]
    fn identifier_validator_accepts_only_plain_names(s in any::<String>()) {
        let ok = validate_identifier(&s).is_ok();
        prop_assert_eq!(ok, safe_identifier(&s));
    }

    #[test]
    fn identifier_validator_rejects_sql_fragments(prefix in "[a-z_]{1,10}", bad in "[ ;'\"`()\\-/*.=\\\\]", suffix in ".{0,10}") {
        let s = format!("{prefix}{bad}{suffix}");
        prop_assert!(validate_identifier(&s).is_err());
    }

    #[test]
    fn validate_never_panics_on_arbitrary_text(s in any::<String>()) {
        let _ = validate_str("x.yaml", &s, &Options::default());
    }

    #[test]
    fn validate_never_panics_on_arbitrary_yaml_documents(doc in arb_json()) {
        let text = serde_yaml::to_string(&doc).unwrap();
        let _ = validate_str("x.yaml", &text, &Options::default());
        // The same document dressed as each Lethe kind reaches the schema checks.
        for kind in lethe::api::KINDS {
            let obj = serde_json::json!({"apiVersion": "lethe.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": doc.clone()});
            let problems = validate_str("x.yaml", &serde_yaml::to_string(&obj).unwrap(), &Options::default());
            for p in problems {
                prop_assert!(!p.to_string().contains('\n'));
            }
        }
    }

    #[test]
    fn mutated_examples_never_panic_and_unsafe_table_names_never_pass(name in any::<String>()) {
        let text = format!(
            "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {{name: db}}\nspec: {{type: postgres, sql: {{host: h, database: d}}}}\n---\napiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: t}}\nspec:\n  storeRef: {{name: db}}\n  categories: [logs]\n  table: {{name: {}}}\n  timestamps: {{created: c}}\n  retention: {{keepFor: 90d}}\n",
            serde_json::to_string(&name).unwrap()
        );
        let errors = validate_str("x.yaml", &text, &Options::default())
            .into_iter()
            .filter(|p| p.severity == lethe::validate::Severity::Error)
            .count();
        if !safe_identifier(&name) {
            prop_assert!(errors > 0, "unsafe table name {:?} accepted", name);
        } else {
            prop_assert_eq!(errors, 0);
        }
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-zA-Z0-9 ;:'\"._-]{0,20}".prop_map(serde_json::Value::from),
        prop_oneof![Just("postgres"), Just("90d"), Just("0d"), Just("anonymize"), Just("event"), Just("Retention")]
            .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("sql".to_string()),
                    Just("table".to_string()),
                    Just("keepFor".to_string()),
                    Just("retention".to_string()),
                    Just("subject".to_string()),
                    Just("storeRef".to_string()),
                    Just("categories".to_string()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
