//! The architecture rule "no import circles between files": within each crate of the workspace,
//! the files that name each other through `crate::` paths form no cycle. A parent module and its
//! own submodules are one unit (a parent declares its children), so only references between
//! files that are not each other's ancestors count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 7] = [
    "nebula-core",
    "nebula-http",
    "nebula-docker",
    "nebula-rabbit",
    "nebula-mongo",
    "nebula-redb",
    "bin",
];

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read source dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `src/worker/pull.rs` -> `worker::pull`; `src/lib.rs` and
/// binaries are the crate root (empty).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    if rel.starts_with("bin") {
        return None;
    }
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "lib" | "main" | "mod") {
        parts.push(stem.to_owned());
    }
    Some(parts.join("::"))
}

/// The `crate::a::b::...` paths a file names, outside comments, with `use crate::a::{b, c}`
/// counting for `a`.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let mut path = Vec::new();
            for seg in after.split("::") {
                let ident: String = seg
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if ident.is_empty() {
                    break;
                }
                let whole = ident.len() == seg.len();
                path.push(ident);
                if !whole {
                    break;
                }
            }
            if !path.is_empty() {
                paths.push(path);
            }
            rest = after;
        }
    }
    paths
}

fn is_ancestor(a: &str, b: &str) -> bool {
    a.is_empty() || b == a || b.starts_with(&format!("{a}::"))
}

/// The cycles among one crate's files, each as the list of modules on it.
fn cycles(krate: &Path) -> Vec<Vec<String>> {
    let src = krate.join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let modules: BTreeMap<String, PathBuf> = all
        .iter()
        .filter_map(|f| module_of(&src, f).map(|m| (m, f.clone())))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("read source");
        // Test modules may reach anywhere.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for path in crate_paths(text) {
            // The longest prefix of the path that is a file of the crate.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains_key(m));
            if let Some(target) = target
                && !is_ancestor(&target, module)
                && !is_ancestor(module, &target)
            {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    // A cycle exists where two modules reach each other.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(m) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut found = Vec::new();
    let mut reported = BTreeSet::new();
    for module in modules.keys() {
        let from = reach(module);
        if !from.contains(module) || reported.contains(module) {
            continue;
        }
        let circle: Vec<String> = modules
            .keys()
            .filter(|other| from.contains(*other) && reach(other).contains(module))
            .cloned()
            .collect();
        reported.extend(circle.iter().cloned());
        found.push(circle);
    }
    found
}

#[test]
fn the_path_parser_reads_use_lines_and_inline_paths() {
    let paths = crate_paths(
        "use crate::worker::pull::{prepare, Ready};\nlet x = crate::plan::plan_app(a); // crate::ignored\n",
    );
    assert_eq!(
        paths,
        vec![
            vec!["worker".to_owned(), "pull".to_owned()],
            vec!["plan".to_owned(), "plan_app".to_owned()],
        ]
    );
    assert_eq!(
        module_of(Path::new("src"), Path::new("src/worker/mod.rs")),
        Some("worker".to_owned())
    );
    assert_eq!(
        module_of(Path::new("src"), Path::new("src/lib.rs")),
        Some(String::new())
    );
}

#[test]
fn no_crate_has_an_import_circle_between_files() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = Vec::new();
    for krate in CRATES {
        for circle in cycles(&root.join(krate)) {
            report.push(format!("{krate}: {}", circle.join(" <-> ")));
        }
    }
    assert!(
        report.is_empty(),
        "import circles between files:\n{}",
        report.join("\n")
    );
}
