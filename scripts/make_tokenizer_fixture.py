#!/usr/bin/env python3
"""Generate the tokenizer reference fixtures: strings and llama.cpp's token ids for them.

Run once (the output is committed); tests/tokenizer_reference.rs compares ucoder-flow's
tokenizer against it. The reference is independent of our code: llama.cpp's own tokenizer,
through llama-cpp-python, loading only the vocabulary of the same GGUF files.

    pip install llama-cpp-python      # see DEVELOPERS.md for the CMAKE_ARGS this machine needs
    python3 scripts/make_tokenizer_fixture.py [--cache data/cache] [--out tests/fixtures/tokenizer]

Writes <out>/<model>.jsonl.gz for each model: a header line
  {"model", "gguf_file", "gguf_sha256", "llama_cpp_python", "seed", "bos", "eos", "eog", "add_bos"}
then one line per string: {"text", "ids"} (ids from tokenize(text, add_bos=False, special=True)),
plus "detok" (llama.cpp's token_to_piece(special=True) of every id, joined) only where that
differs from text.
The strings are the same for every model and are generated deterministically from SEED.
"""

import argparse
import gzip
import hashlib
import json
import os
import random
import sys

SEED = 20251121
MODELS = {
    "smollm2-135m-instruct": "smollm2-135m-instruct.Q4_1.gguf",
    "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b-instruct.gguf",
}

# Special tokens of both models (and some look-alikes that are not tokens anywhere).
SPECIAL_TOKENS = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
    "<tool_call>", "</tool_call>", "<|box_start|>",
    "<repo_name>", "<reponame>", "<file_sep>", "<filename>", "<gh_stars>", "<issue_start>",
    "<jupyter_code>", "<jupyter_output>", "<empty_output>",
    "<|im_start", "im_end|>", "<|endoftext", "<s>", "</s>", "[PAD151665]", "<|unknown_token|>",
]

HAND_WRITTEN = [
    "", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", "\n\n\n", " \n", "\n ", " \t \n ", "\t\t\t",
    "a", "A", "0", "00", "000", "0000", "12345", "1234567890123456789012345678901234567890",
    "3.14159265358979323846", "-0.000001", "1e-10", "0x7fffffff", "0b1010_1010", "1_000_000",
    "Hello world", "Hello  world", "Hello   world", " Hello world", "Hello world ", "Hello world  ",
    "hello\tworld", "hello\r\nworld\r\n", "line1\rline2", "trailing spaces   \n  next",
    "I'm", "I'M", "you're", "YOU'RE", "don't", "DON'T", "it's", "IT'S", "we've", "they'll", "he'd",
    "'s 't 're 've 'm 'll 'd", "''", "'''docstring'''", '"""docstring"""',
    "def f(x):\n    return x * 2\n", "def f(x):\r\n\treturn x * 2\r\n",
    "    \n        \n            pass", "if x:\n\n\n    y = 1\n",
    "for i in range(10):\n    print(i ** 2, end=' ')",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!(\"{v:?}\");\n}",
    "const f = async (x) => { await fetch(`/api/${x}`); };",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "$ ls -la | grep '\\.py$' && echo \"done\" > /dev/null 2>&1",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}',
    "https://example.com/path?query=1&other=two#frag",
    "user@example.com", "C:\\Users\\name\\file.txt", "a\\nb\\tc",
    "**bold** _italic_ `code` [link](http://x.y)", "# Title\n\n- item 1\n- item 2\n",
    "==========", "----------", "~~~~~~~~", "!!!???", "...", "…", "—", "–", "«»", "„“", "‘’",
    "café", "naïve", "Ångström", "e\u0301", "n\u0303o", "Ä\u0308", "ﬁ", "ǅ", "ß", "İstanbul", "ǈǉǊ",
    "Привет, мир!", "Γειά σου Κόσμε", "שלום עולם", "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก",
    "你好，世界！", "中文字符测试。", "日本語のテキスト、カタカナとひらがな。", "안녕하세요 세계",
    "全角スペース\u3000あり", "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３", "数字123と漢字",
    "😀", "🎉🎉🎉", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "❤️", "☃", "✓ ✗", "emoji in code: print('🐍')",
    "∀x ∈ ℝ: x² ≥ 0", "α + β = γ", "½ ¾ ⅓", "①②③", "Ⅻ", "٣٤٥", "१२३", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚",
    "non\u00a0breaking\u00a0space", "zero\u200bwidth", "\ufeffbom at start", "line\u2028separator",
    "next\u0085line", "soft\u00adhyphen", "tab\u000bvertical", "form\u000cfeed", "esc\u001b[31mred",
    "nul\u0000byte", "bell\u0007", "unit\u001fsep", "\u202eright-to-left override",
    "<|im_start|>user\nWrite a function.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "text<|endoftext|>more text", "<|endoftext|><|endoftext|>", "<|im_end|>\n\n", " <|im_end|> ",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start", "|im_end|>", "<|im_start|assistant",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "<|fim_prefix|>def f(<|fim_suffix|>):\n    pass<|fim_middle|>",
    "<filename>main.py\n<gh_stars>100\nimport os", "<jupyter_code>print(1)<jupyter_output>1",
    "<<|im_start|>>", "<|<|im_end|>|>", "[PAD151665]", "<s>hello</s>",
]

UNICODE_POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " \t\n\r",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿĀāĂăĄąĆćČčĎďĘęĚěĞğĪīŁłŃńŇňŌōŐőŒœŘřŚśŠšŤťŪūŮůŰűŸŹźŻżŽž",
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ",
    "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ",
    "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生",
    "あいうえおかきくけこさしすせそたちつてとなにぬねのアイウエオカキクケコ",
    "가나다라마바사아자차카타파하",
    "😀😃😄😁😆😅😂🤣😊😇🙂🙃😉😌😍🥰😘🎉🔥💯🚀🐍🦀✨⭐",
    "←↑→↓↔∀∂∃∅∇∈∉∋∏∑−∗√∝∞∠∧∨∩∪∫≈≠≡≤≥⊂⊃⊆⊇⊕⊗",
    "\u00a0\u3000\u2009\u200b\u2028\u0085\u000b\u000c",
    "\u0300\u0301\u0302\u0303\u0308\u0327",
]


def load_humaneval(cache):
    path = os.path.join(cache, "HumanEval.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def random_number(rng):
    kind = rng.randrange(5)
    if kind == 0:
        return str(rng.randrange(10 ** rng.randrange(1, 40)))
    if kind == 1:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randrange(1, 12)}f}"
    if kind == 2:
        return hex(rng.randrange(1 << 64))
    if kind == 3:
        return f"{rng.randrange(1, 10)}.{rng.randrange(10**6)}e{rng.choice('+-')}{rng.randrange(100)}"
    return ",".join(str(rng.randrange(1000)) for _ in range(rng.randrange(2, 8)))


def random_whitespace(rng):
    return rng.choice([
        " " * rng.randrange(1, 24), "\t" * rng.randrange(1, 5), "\n" * rng.randrange(1, 5),
        "\r\n" * rng.randrange(1, 4), " \n" * rng.randrange(1, 3), "\n" + " " * rng.randrange(1, 16),
        "  \t ", "\u3000", "\u00a0", " \r\n    ",
    ])


def random_soup(rng, n):
    out = []
    for _ in range(n):
        pool = rng.choice(UNICODE_POOLS)
        out.append("".join(rng.choice(pool) for _ in range(rng.randrange(1, 8))))
    return "".join(out)


def mutate_code(rng, code):
    lines = code.split("\n")
    start = rng.randrange(len(lines))
    lines = lines[start:start + rng.randrange(1, 12)]
    out = []
    for line in lines:
        r = rng.random()
        if r < 0.15:
            line = line.replace("    ", "\t")
        elif r < 0.25:
            line = line + " " * rng.randrange(1, 6)
        elif r < 0.35:
            line = line + "  # " + random_soup(rng, rng.randrange(1, 4))
        elif r < 0.42:
            line = line + " = " + random_number(rng)
        elif r < 0.47:
            line = rng.choice(SPECIAL_TOKENS) + line
        out.append(line)
    sep = rng.choice(["\n", "\n", "\n", "\r\n", "\n\n"])
    return sep.join(out)


def generate_strings(humaneval):
    rng = random.Random(SEED)
    strings = list(HAND_WRITTEN)
    code = []
    for row in humaneval:
        code.extend([row["prompt"], row["canonical_solution"], row["test"]])
    strings.extend(code)
    strings.extend(row["prompt"] + row["canonical_solution"] for row in humaneval[:40])
    for _ in range(260):
        strings.append(mutate_code(rng, rng.choice(code)))
    for _ in range(160):
        strings.append(random_soup(rng, rng.randrange(1, 30)))
    for _ in range(120):
        parts = []
        for _ in range(rng.randrange(2, 10)):
            kind = rng.randrange(5)
            if kind == 0:
                parts.append(random_number(rng))
            elif kind == 1:
                parts.append(random_whitespace(rng))
            elif kind == 2:
                parts.append(rng.choice(SPECIAL_TOKENS))
            elif kind == 3:
                parts.append(random_soup(rng, rng.randrange(1, 5)))
            else:
                words = rng.choice(code).split()
                if words:
                    i = rng.randrange(len(words))
                    parts.append(" ".join(words[i:i + rng.randrange(1, 8)]))
        strings.append("".join(parts))
    # Conversations as the chat templates lay them out.
    for row in humaneval[:60]:
        strings.append(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            f"Complete this function:\n```python\n{row['prompt']}```<|im_end|>\n<|im_start|>assistant\n"
            f"```python\n{row['prompt']}{row['canonical_solution']}```<|im_end|>\n"
        )
    seen = set()
    unique = []
    for s in strings:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    return unique


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def detokenize(llama_cpp, vocab, ids):
    """llama.cpp's text for `ids`, special tokens rendered. (Llama.detokenize truncates pieces
    longer than 32 bytes, e.g. long whitespace tokens, so the pieces are fetched here.)"""
    import ctypes

    out = b""
    size = 256
    buf = (ctypes.c_char * size)()
    for token in ids:
        n = llama_cpp.llama_token_to_piece(vocab, llama_cpp.llama_token(token), buf, size, 0, True)
        if n < 0:
            size = -n
            buf = (ctypes.c_char * size)()
            n = llama_cpp.llama_token_to_piece(vocab, llama_cpp.llama_token(token), buf, size, 0, True)
        out += bytes(buf[:n])
    return out.decode("utf-8", errors="replace")


def reference(model_name, gguf_path, strings, out_dir):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=gguf_path, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llm.n_vocab()
    eog = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    header = {
        "model": model_name,
        "gguf_file": os.path.basename(gguf_path),
        "gguf_sha256": sha256(gguf_path),
        "llama_cpp_python": llama_cpp.__version__,
        "seed": SEED,
        "n_vocab": n_vocab,
        "bos": llm.token_bos(),
        "eos": llm.token_eos(),
        "eog": eog,
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
    }
    path = os.path.join(out_dir, f"{model_name}.jsonl.gz")
    tmp = path + ".tmp"
    tokens = 0
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=9) as f:
        f.write(json.dumps(header, ensure_ascii=False) + "\n")
        for text in strings:
            ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            tokens += len(ids)
            row = {"text": text, "ids": ids}
            detok = detokenize(llama_cpp, vocab, ids)
            if detok != text:
                row["detok"] = detok
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    print(f"{path}: {len(strings)} strings, {tokens} tokens, eog={eog}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=os.environ.get("UCODER_FLOW_CACHE", "data/cache"))
    parser.add_argument("--out", default="tests/fixtures/tokenizer")
    args = parser.parse_args()
    strings = generate_strings(load_humaneval(args.cache))
    os.makedirs(args.out, exist_ok=True)
    for model_name, file_name in MODELS.items():
        reference(model_name, os.path.join(args.cache, file_name), strings, args.out)


if __name__ == "__main__":
    main()
