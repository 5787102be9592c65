//! A Python with the table tools users read ucoder-flow's tables with (pandas, polars, pyarrow,
//! HF datasets), installed once into a virtual environment under the target folder (nothing is
//! cached outside the repository; pip's own cache is off). Needs PyPI, as CI's set-up has.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Pinned, so a table test does not change with a release of a tool.
const TOOLS: [&str; 4] = [
    "pandas==3.1.1",
    "pyarrow==26.0.1",
    "polars==2.1.0",
    "datasets==5.2.0",
];

/// The venv's interpreter (made on first use).
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-table-tools");
        let python = venv.join("bin/python");
        let stamp = venv.join("installed.txt");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(&TOOLS.join("\n")) {
            return python;
        }
        let _ = std::fs::remove_dir_all(&venv);
        let base = ucoder_flow::sandbox::real_python().expect("a Python 3 interpreter");
        run(Command::new(base).args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--no-cache-dir"])
            .args(TOOLS));
        std::fs::write(&stamp, TOOLS.join("\n")).unwrap();
        python
    })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed (installing the table tools needs PyPI):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tests/python_tools/read_tables.py` on `iter_dir`: per tool, per table, per id column, the
/// values as the tool read them. HF runs offline with its cache in a temp folder.
pub fn read_tables(iter_dir: &Path) -> serde_json::Value {
    let hf_home = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_tools/read_tables.py");
    let out = Command::new(python())
        .arg(script)
        .arg(iter_dir)
        .env("HF_HOME", hf_home.path())
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .output()
        .expect("run read_tables.py");
    assert!(
        out.status.success(),
        "read_tables.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("read_tables.py prints JSON")
}
