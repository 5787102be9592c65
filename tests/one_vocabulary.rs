//! One vocabulary: every public type name (`pub struct|enum|trait|type NAME`) is defined once in
//! the workspace's library code, in the layer that owns it, so no import has to rename one
//! (`use … as …`) to tell two apart. A second definition fails this test; give the new type a
//! name that says what it is instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Library source folders of the workspace.
const ROOTS: [&str; 2] = ["src", "operators/src"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The name a line defines publicly, if it does.
fn public_type_name(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("pub ")?;
    let rest = ["struct ", "enum ", "trait ", "type "]
        .iter()
        .find_map(|kw| rest.strip_prefix(kw))?;
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|n| !n.is_empty())
}

#[test]
fn no_public_type_name_is_defined_twice() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ROOTS {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    let mut defined: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, line) in text.lines().enumerate() {
            if let Some(name) = public_type_name(line) {
                let at = format!(
                    "{}:{}",
                    file.strip_prefix(root).unwrap_or(file).display(),
                    i + 1
                );
                defined.entry(name.to_string()).or_default().push(at);
            }
        }
    }
    let twice: Vec<String> = defined
        .iter()
        .filter(|(_, places)| places.len() > 1)
        .map(|(name, places)| format!("{name}: {}", places.join(", ")))
        .collect();
    assert!(
        twice.is_empty(),
        "public type names defined more than once:\n{}",
        twice.join("\n")
    );
    assert!(defined.len() > 100, "the scan found too few types");
}

#[test]
fn the_scan_reads_definitions() {
    assert_eq!(public_type_name("pub struct Draft {"), Some("Draft"));
    assert_eq!(
        public_type_name("    pub enum LlmStage {"),
        Some("LlmStage")
    );
    assert_eq!(
        public_type_name("pub type Generation = Result<"),
        Some("Generation")
    );
    assert_eq!(
        public_type_name("pub trait Service: Send {"),
        Some("Service")
    );
    assert_eq!(public_type_name("pub fn run() {"), None);
    assert_eq!(public_type_name("pub(crate) struct Job<R> {"), None);
}
