//! The iteration folder's dataset card (`iter-N/README.md`): YAML `configs` that name each table
//! and its files, so that HF `datasets` reads one table per config
//! (`load_dataset("runs/x/iter-0", "selections")`; with no name, the SFT shards) instead of
//! guessing splits from folder names (`test_cases/` would pass for a "test" split, `train/` for
//! a "train" one, and tables of different schemas would be mixed). pandas, polars and DuckDB read
//! a table's folder directly; `docs/TABLES.md` has every column. The chat form of the SFT pairs
//! (`sft_messages/messages.jsonl`) is not a config (HF builds every config of a card with one
//! builder, here Parquet's): `load_dataset("<iter>/sft_messages")` reads it.

use std::path::Path;

use crate::store::{StoreError, write_atomic};

/// (config name, files relative to the iteration folder, what the table is). The first is the
/// default config.
pub const TABLES: [(&str, &str, &str); 12] = [
    (
        "sft",
        "sft/*.parquet",
        "packed SFT rows (input_ids, labels, position_ids, problem_ids, offsets)",
    ),
    (
        "selections",
        "selections/*.parquet",
        "one selected solution per problem",
    ),
    ("clusters", "clusters/*.parquet", "consensus clusters"),
    (
        "rejections",
        "rejections/*.parquet",
        "every item that left the funnel, with its reason",
    ),
    (
        "problem_set",
        "problem_set/*.parquet",
        "problems that reached sampling",
    ),
    (
        "test_cases",
        "test_cases/*.parquet",
        "the tests kept per problem",
    ),
    (
        "problems",
        "problems/*.parquet",
        "checkpoint: problem answers",
    ),
    ("ratings", "ratings/*.parquet", "checkpoint: rating answers"),
    (
        "skeletons",
        "skeletons/*.parquet",
        "checkpoint: skeleton answers",
    ),
    ("tests", "tests/*.parquet", "checkpoint: test answers"),
    (
        "candidates",
        "candidates/*.parquet",
        "checkpoint: sampled solutions",
    ),
    (
        "executions",
        "executions/*.parquet",
        "checkpoint: one row per (candidate, test)",
    ),
];

/// The card's text for iteration `index`.
pub fn card(index: u32) -> String {
    let mut out = String::from("---\nconfigs:\n");
    for (i, (name, files, _)) in TABLES.iter().enumerate() {
        out.push_str(&format!(
            "- config_name: {name}\n  data_files: \"{files}\"\n"
        ));
        if i == 0 {
            out.push_str("  default: true\n");
        }
    }
    out.push_str(&format!(
        "---\n\n# ucoder-flow iteration {index}\n\nOne config per table (HF `datasets`: \
         `load_dataset(\"<this folder>\", \"<config>\")`; pandas / polars / DuckDB: read the \
         table's folder). The SFT pairs as chat messages: \
         `load_dataset(\"<this folder>/sft_messages\")`. Ids are 16-digit hex strings in every \
         table. Columns: ucoder-flow's `docs/TABLES.md`.\n\n| config | files | what |\n|---|---|---|\n"
    ));
    for (name, files, what) in TABLES {
        out.push_str(&format!("| `{name}` | `{files}` | {what} |\n"));
    }
    out
}

/// Writes the card into `iter_dir` (replacing an older one).
pub fn write(iter_dir: &Path, index: u32) -> Result<(), StoreError> {
    write_atomic(&iter_dir.join("README.md"), card(index).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_names_every_table_once_with_sft_as_the_default() {
        let card = card(3);
        let header = card.split("---").nth(1).unwrap();
        assert_eq!(header.matches("- config_name: ").count(), TABLES.len());
        assert_eq!(header.matches("default: true").count(), 1);
        assert!(header.starts_with(
            "\nconfigs:\n- config_name: sft\n  data_files: \"sft/*.parquet\"\n  default: true\n"
        ));
        assert!(card.contains("# ucoder-flow iteration 3"));
    }
}
