//! The order in which an erasure visits datasets: children before parents,
//! so a foreign key never blocks (or cascades into) a parent's delete
//! before the child's own records were handled under their own rules.

use std::collections::{BTreeMap, BTreeSet};

/// A dataset and the parents it references (its relations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub parents: Vec<String>,
}

/// Datasets ordered children first. Parents outside the set are ignored;
/// ties are broken by name so the order is stable. A cycle is an error
/// naming the datasets on it.
pub fn children_first(nodes: &[Node]) -> Result<Vec<String>, String> {
    let names: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    // Count, for every dataset, the children that must come before it.
    let mut waiting: BTreeMap<&str, usize> = names.iter().map(|n| (*n, 0)).collect();
    for n in nodes {
        for p in n.parents.iter().filter(|p| names.contains(p.as_str()) && **p != n.name) {
            *waiting.get_mut(p.as_str()).expect("known name") += 1;
        }
    }
    let mut ready: BTreeSet<&str> = waiting.iter().filter(|(_, c)| **c == 0).map(|(n, _)| *n).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(next) = ready.pop_first() {
        order.push(next.to_string());
        let node = nodes.iter().find(|n| n.name == next).expect("known name");
        for p in node.parents.iter().filter(|p| names.contains(p.as_str()) && **p != node.name) {
            let c = waiting.get_mut(p.as_str()).expect("known name");
            *c -= 1;
            if *c == 0 {
                ready.insert(p.as_str());
            }
        }
    }
    if order.len() < names.len() {
        let stuck: Vec<&str> =
            waiting.iter().filter(|(n, c)| **c > 0 && !order.iter().any(|o| o == *n)).map(|(n, _)| *n).collect();
        return Err(format!("relations form a cycle among {}", stuck.join(", ")));
    }
    Ok(order)
}

/// Foreign keys the store shows that no declared relation covers: worth a
/// warning, because erasure order then rests on the database alone.
/// `declared` and `found` are (child table, parent table) pairs.
pub fn undeclared<'a>(declared: &[(String, String)], found: &'a [(String, String)]) -> Vec<&'a (String, String)> {
    found.iter().filter(|f| !declared.contains(f)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(name: &str, parents: &[&str]) -> Node {
        Node { name: name.into(), parents: parents.iter().map(|p| p.to_string()).collect() }
    }

    #[test]
    fn children_come_before_parents() {
        let nodes = [
            node("customers", &[]),
            node("invoices", &["customers"]),
            node("invoice_lines", &["invoices"]),
            node("marketing", &[]),
        ];
        assert_eq!(children_first(&nodes).unwrap(), vec!["invoice_lines", "invoices", "customers", "marketing"]);
    }

    #[test]
    fn cycles_are_named() {
        let nodes = [node("a", &["b"]), node("b", &["a"]), node("c", &[])];
        let e = children_first(&nodes).unwrap_err();
        assert!(e.contains("a, b"), "{e}");
    }

    #[test]
    fn undeclared_foreign_keys_are_reported() {
        let declared = vec![("invoices".to_string(), "customers".to_string())];
        let found =
            vec![("invoices".to_string(), "customers".to_string()), ("orders".to_string(), "customers".to_string())];
        assert_eq!(undeclared(&declared, &found), vec![&("orders".to_string(), "customers".to_string())]);
    }

    proptest! {
        /// For any acyclic relations (parents have lower indexes), every
        /// child precedes each of its parents and every dataset appears once.
        #[test]
        fn order_respects_every_relation(edges in prop::collection::vec((1usize..12, 0usize..12), 0..30)) {
            let mut nodes: Vec<Node> = (0..12).map(|i| node(&format!("d{i:02}"), &[])).collect();
            for (child, parent) in edges {
                if parent < child {
                    nodes[child].parents.push(format!("d{parent:02}"));
                }
            }
            let order = children_first(&nodes).unwrap();
            prop_assert_eq!(order.len(), 12);
            let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
            for n in &nodes {
                for p in &n.parents {
                    prop_assert!(pos(&n.name) < pos(p), "{} before {}", n.name, p);
                }
            }
        }
    }
}
