//! Extraction (`python::extract`) on real model outputs (llama.cpp generations recorded by
//! `scripts/eval_llamacpp.py --humaneval`, kept verbatim). `expected.json` holds, per fixture
//! file and task, the hand-checked status and a substring of the detail; every extracted
//! program must also be valid Python (checked with python3's `ast`).

use ucoder_flow::eval::humaneval;
use ucoder_flow::eval::prompt::{PromptSpec, build};
use ucoder_flow::python::extract::{PromptStyle, extract};

#[test]
fn real_model_outputs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).unwrap())
            .unwrap();
    let problems = humaneval::load(
        &ucoder_flow::fetch::cache_dir(),
        &ucoder_flow::progress::Silent,
    )
    .unwrap();
    let mut programs = Vec::new();
    let mut checked = 0;
    let mut missing = Vec::new();
    for (file, cases) in expected.as_object().unwrap() {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for line in text.lines() {
            let rec: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = rec["task_id"].as_str().unwrap();
            let problem = problems.iter().find(|p| p.task_id == id).unwrap();
            // The recorded chat message is the one ucoder-flow builds.
            let PromptSpec::ChatUser(user) = build(&problem.prompt, PromptStyle::Chat) else {
                unreachable!()
            };
            assert_eq!(
                rec["messages"][0]["content"].as_str().unwrap(),
                user,
                "{file} {id}"
            );
            let e = extract(
                &problem.prompt,
                &problem.entry_point,
                rec["completion"].as_str().unwrap(),
                PromptStyle::Chat,
            );
            let case = &cases[id];
            if case.is_null() {
                missing.push(format!("{file} {id}: {e}\n{}", e.program().unwrap_or("")));
                continue;
            }
            assert_eq!(
                e.status(),
                case["status"].as_str().unwrap(),
                "{file} {id}: {e}"
            );
            let detail = case["detail"].as_str().unwrap_or("");
            assert!(
                e.detail().contains(detail),
                "{file} {id}: {e}, expected detail containing {detail:?}"
            );
            if let Some(p) = e.program() {
                assert!(
                    p.contains(&format!("def {}(", problem.entry_point)),
                    "{file} {id}"
                );
                programs.push((
                    format!("{file} {id}"),
                    p.to_string(),
                    case["valid_python"].as_bool().unwrap_or(true),
                ));
            }
            checked += 1;
        }
    }
    assert!(
        missing.is_empty(),
        "fixtures without expectations:\n{}",
        missing.join("\n")
    );
    assert!(checked >= 20, "only {checked} fixtures");
    // One python3 run parses every program and prints which are valid.
    let script = "import ast, json, sys\nfor p in json.load(sys.stdin):\n    try:\n        ast.parse(p); print('ok')\n    except SyntaxError as e:\n        print('bad', e)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sources: Vec<&str> = programs.iter().map(|(_, p, _)| p.as_str()).collect();
    serde_json::to_writer(child.stdin.take().unwrap(), &sources).unwrap();
    let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let verdicts: Vec<&str> = out.lines().collect();
    assert_eq!(verdicts.len(), programs.len());
    for ((name, program, valid), verdict) in programs.iter().zip(verdicts) {
        assert_eq!(verdict == "ok", *valid, "{name}: {verdict}\n{program}");
    }
}
