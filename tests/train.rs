//! The built-in trainer end to end on real files: SFT shards written by the pipeline's sink from
//! the small test model's tokenizer and chat template, the small model exported to safetensors,
//! and `ucoder-flow train` run as a user runs it.
//!
//! - The trainer's forward pass computes what the inference engine computes (log-probabilities
//!   of the same tokens within the engine's 8-bit tolerance), so what it trains is the model the
//!   pipeline samples from.
//! - Training lowers the loss; the saved folder reloads with bit-identical logits, LoRA merged
//!   equals LoRA unmerged, and the engine generates with the result.
//! - A run killed with SIGKILL mid-training resumes to the same final weights, bit for bit, as a
//!   run that was never interrupted (CPU, fixed thread count), in full and LoRA fine-tuning.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{D, DType, Device, Tensor};
use ucoder_flow::llm::chat::ChatTemplate;
use ucoder_flow::llm::gguf::GgufModel;
use ucoder_flow::llm::tokenizer::Tokenizer;
use ucoder_flow::llm::{Engine, EngineOptions, SamplerSettings};
use ucoder_flow::models::ModelSource;
use ucoder_flow::sft::sink::{SftPair, write_sft};
use ucoder_flow::train::attention::Segments;
use ucoder_flow::train::batch::Batch;
use ucoder_flow::train::model::{TrainMode, TrainModel};
use ucoder_flow::train::{TrainConfig, TrainJob, TrainMethod, base_dir, train};

fn pairs() -> Vec<SftPair> {
    (0..6u64)
        .map(|i| SftPair {
            problem_id: 100 + i,
            user: format!(
                "Write `add{i}(x: int) -> int` returning x + {i}.\n\n```python\ndef add{i}(x: int) -> int:\n    pass\n```"
            ),
            assistant: format!("```python\ndef add{i}(x: int) -> int:\n    return x + {i}\n```"),
        })
        .collect()
}

/// The small model as safetensors and SFT shards made from it, in `dir`.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let gguf = ucoder_flow::models::test_model().expect("test model");
    let base = base_dir(&gguf, &dir.join("export")).expect("export the small model");
    let model = GgufModel::open(gguf.path()).unwrap();
    let tokenizer = Tokenizer::from_gguf(model.content()).unwrap();
    let template = ChatTemplate::from_gguf(model.content()).unwrap();
    let data = dir.join("sft");
    // Rows of at most ~2 examples, so a run has several steps.
    write_sft(&data, &pairs(), &tokenizer, &template, 160, 4).expect("write shards");
    (base, data)
}

fn config(method: TrainMethod, epochs: usize, lr: f64) -> TrainConfig {
    let mut c = TrainConfig {
        method,
        epochs,
        learning_rate: lr,
        batch_rows: 2,
        warmup_ratio: 0.0,
        ..Default::default()
    };
    c.lora.rank = 4;
    c
}

fn single(tokens: &[u32]) -> Batch {
    Batch {
        input_ids: tokens.to_vec(),
        position_ids: (0..tokens.len() as u32).collect(),
        segments: Segments::from_lengths([tokens.len()]),
        target_rows: Vec::new(),
        targets: Vec::new(),
    }
}

fn log_probs(model: &TrainModel, prompt: &[u32], completion: &[u32]) -> Vec<f32> {
    let all: Vec<u32> = prompt.iter().chain(completion).copied().collect();
    let logits = model.logits(&single(&all)).unwrap();
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
    let lp: Vec<Vec<f32>> = lp.to_vec2().unwrap();
    completion
        .iter()
        .enumerate()
        .map(|(i, &t)| lp[prompt.len() + i - 1][t as usize])
        .collect()
}

#[test]
fn trainer_forward_matches_the_engine_and_training_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (base, data) = fixture(dir.path());
    ucoder_flow::train::apply_threads(2).unwrap();

    // 1. The trainer's model scores what the engine scores.
    let opts = EngineOptions {
        threads: Some(2),
        ..Default::default()
    };
    let mut engine = Engine::load(&ModelSource::Safetensors(base.clone()), &opts).unwrap();
    let prompt = engine.encode_prompt("def fibonacci(n):\n").unwrap();
    let completion = engine
        .generate_n("def fibonacci(n):\n", 1, &SamplerSettings::greedy(24))
        .unwrap()
        .remove(0)
        .token_ids;
    let from_engine = engine.score(&prompt, &completion).unwrap();
    drop(engine);
    let model = TrainModel::load(&base, &TrainMode::Full, &Device::Cpu, 0).unwrap();
    let ours = log_probs(&model, &prompt, &completion);
    let mean = ours
        .iter()
        .zip(&from_engine)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / ours.len() as f32;
    assert!(mean < 0.1, "trainer vs engine: mean |Δ logprob| {mean}");
    drop(model);

    // 2. Full fine-tuning lowers the loss; the saved model reloads bit for bit.
    let out = dir.path().join("full");
    let job = TrainJob {
        base: ModelSource::Safetensors(base.clone()),
        data: data.clone(),
        out: out.clone(),
        config: config(TrainMethod::Full, 2, 1e-4),
        default_seed: 1,
        device: Device::Cpu,
    };
    let summary = train(&job, &ucoder_flow::progress::Silent).unwrap();
    assert!(summary.steps >= 6, "{summary:?}");
    assert!(
        summary.final_loss < summary.first_loss * 0.8,
        "loss {} → {}",
        summary.first_loss,
        summary.final_loss
    );
    let log: Vec<ucoder_flow::train::log::TrainStepRow> =
        ucoder_flow::store::Stage::read(&out.join("log")).unwrap();
    assert_eq!(log.len(), summary.steps);
    assert!(log.iter().all(|r| r.grad_norm > 0.0 && r.tokens > 0));
    let trained = TrainModel::load(&summary.model, &TrainMode::Full, &Device::Cpu, 0).unwrap();
    let again = TrainModel::load(&summary.model, &TrainMode::Full, &Device::Cpu, 0).unwrap();
    let batch = single(&prompt);
    let a: Vec<Vec<f32>> = trained.logits(&batch).unwrap().to_vec2().unwrap();
    assert_eq!(a, again.logits(&batch).unwrap().to_vec2::<f32>().unwrap());
    let trained_lp = log_probs(&trained, &prompt, &completion);
    assert_ne!(trained_lp, ours, "training changed nothing");
    // Running it again finds it done.
    assert_eq!(
        train(&job, &ucoder_flow::progress::Silent).unwrap(),
        summary
    );
    drop((trained, again));

    // 3. LoRA: merged weights compute what the adapted model computes.
    let mut lora_cfg = config(TrainMethod::Lora, 2, 1e-3);
    lora_cfg.lora.targets = vec!["q_proj".into(), "v_proj".into(), "down_proj".into()];
    let lora = TrainModel::load(&base, &lora_cfg.mode(), &Device::Cpu, 5).unwrap();
    for (_, var) in lora.trainable() {
        let noise = Tensor::randn(0f32, 0.02, var.shape(), &Device::Cpu).unwrap();
        var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
    }
    let merged_dir = dir.path().join("merged");
    lora.save(&base, &merged_dir).unwrap();
    let merged = TrainModel::load(&merged_dir, &TrainMode::Full, &Device::Cpu, 0).unwrap();
    let diff = (lora.logits(&batch).unwrap() - merged.logits(&batch).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        diff < 1e-3,
        "LoRA merged vs unmerged logits differ by {diff}"
    );
    drop((lora, merged));

    // 4. The engine generates with the fine-tuned model.
    let mut engine = Engine::load(&ModelSource::Safetensors(summary.model.clone()), &opts).unwrap();
    let text = engine
        .generate_n("def add1(x: int) -> int:\n", 1, &SamplerSettings::greedy(8))
        .unwrap();
    assert_eq!(text[0].token_ids.len(), 8);
}

fn train_command(base: &Path, data: &Path, out: &Path, method: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ucoder-flow"));
    cmd.args(["train", "--quiet", "--threads", "2", "--method", method])
        .args([
            "--epochs",
            "2",
            "--batch-rows",
            "2",
            "--lr",
            "1e-4",
            "--checkpoint-every",
            "1",
        ])
        .arg("--model")
        .arg(base)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    cmd
}

fn next_step(out: &Path) -> usize {
    std::fs::read_to_string(out.join("checkpoint/state.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["next_step"].as_u64())
        .unwrap_or(0) as usize
}

#[test]
fn sigkill_then_resume_gives_the_same_weights_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (base, data) = fixture(dir.path());
    for method in ["lora", "full"] {
        let whole = dir.path().join(format!("{method}-whole"));
        let status = train_command(&base, &data, &whole, method)
            .status()
            .unwrap();
        assert!(status.success());
        let killed = dir.path().join(format!("{method}-killed"));
        let mut child = train_command(&base, &data, &killed, method)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(600);
        while next_step(&killed) < 2 {
            assert!(Instant::now() < deadline, "no checkpoint appeared");
            assert!(
                child.try_wait().unwrap().is_none(),
                "finished before it could be killed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(!killed.join("train.json").exists());
        let output = train_command(&base, &data, &killed, method)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let a = std::fs::read(whole.join("model/model.safetensors")).unwrap();
        let b = std::fs::read(killed.join("model/model.safetensors")).unwrap();
        assert!(
            a == b,
            "{method}: resumed weights differ from the uninterrupted run's"
        );
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(killed.join("train.json")).unwrap()).unwrap();
        assert!(summary["resumed_from_step"].as_u64().unwrap() >= 2);
        let log_a: Vec<ucoder_flow::train::log::TrainStepRow> =
            ucoder_flow::store::Stage::read(&whole.join("log")).unwrap();
        let log_b: Vec<ucoder_flow::train::log::TrainStepRow> =
            ucoder_flow::store::Stage::read(&killed.join("log")).unwrap();
        let losses = |log: &[ucoder_flow::train::log::TrainStepRow]| {
            log.iter()
                .map(|r| (r.step, r.loss.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(losses(&log_a), losses(&log_b));
        assert!(
            !killed.join("checkpoint").exists(),
            "the checkpoint is removed when done"
        );
    }
}
