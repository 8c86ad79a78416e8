//! The library's modules import only from the layers below them, and no two files import each
//! other, directly or around a circle (docs/ARCHITECTURE.md). Read from the sources: every
//! `crate::…` path and `super::…` path outside a file's unit tests counts, doc links included.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, lowest layer first: each may use only those before it.
const LAYERS: &[&str] = &[
    "offset", "error", "layout", "segment", "io", "testing", "config", "meta", "index", "shard",
    "store", "batches", "producer", "consumer", "inspect", "log",
];

/// Module path (`shard::writer`) → source text, for every file under `src/`.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // A file's unit tests may reach anywhere.
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            (parts.join("::"), text)
        })
        .filter(|(module, _)| module != "lib")
        .collect()
}

/// The modules each file refers to: the longest module prefix of each `crate::` path, and
/// the sibling named by each `super::` path.
fn references(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect()
    };
    let mut out = BTreeMap::new();
    for (module, text) in sources {
        let mut refs = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            let path = ident(&text[at + "crate::".len()..]);
            let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            if let Some(target) = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|m| sources.contains_key(m))
            {
                refs.insert(target);
            }
        }
        let parent: Vec<&str> = module.split("::").collect();
        let parent = parent[..parent.len() - 1].join("::");
        for (at, _) in text.match_indices("super::") {
            let name = ident(&text[at + "super::".len()..]);
            let name = name.split("::").next().unwrap_or("");
            let sibling = if parent.is_empty() {
                name.to_owned()
            } else {
                format!("{parent}::{name}")
            };
            if sources.contains_key(&sibling) {
                refs.insert(sibling);
            } else if sources.contains_key(&parent) {
                refs.insert(parent.clone());
            }
        }
        // A module may use its own submodules, and its submodules their parent's items.
        refs.retain(|r| {
            r != module
                && !r.starts_with(&format!("{module}::"))
                && !module.starts_with(&format!("{r}::"))
        });
        out.insert(module.clone(), refs);
    }
    out
}

#[test]
fn modules_import_only_from_the_layers_below() {
    let sources = sources();
    let mut wrong = Vec::new();
    for (module, refs) in references(&sources) {
        let top = module.split("::").next().unwrap();
        let Some(level) = LAYERS.iter().position(|l| *l == top) else {
            wrong.push(format!("{module}: not in LAYERS (add its layer)"));
            continue;
        };
        for r in refs {
            let target = r.split("::").next().unwrap();
            let target_level = LAYERS.iter().position(|l| *l == target);
            if target != top && target_level.is_none_or(|t| t > level) {
                wrong.push(format!("{module} uses {r}, a layer above it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_two_files_import_each_other_around_a_circle() {
    let graph = references(&sources());
    // Depth-first search for a back edge; the circle is reported from the stack.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(true) => {
                let from = stack.iter().position(|n| *n == node).unwrap();
                let mut circle: Vec<String> = stack[from..].iter().map(|s| s.to_string()).collect();
                circle.push(node.to_owned());
                return Some(circle);
            }
            Some(false) => return None,
            None => {}
        }
        state.insert(node, true);
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(node, false);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        let mut stack = Vec::new();
        if let Some(circle) = visit(node, &graph, &mut state, &mut stack) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}
