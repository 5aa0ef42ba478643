#!/usr/bin/env python3
"""Expected token ids for io/tokenizer tests, produced by Hugging Face `tokenizers` (the oracle).

Run on a development machine only (`pip install tokenizers`; never a CI or engine dependency):
    python3 tools/oracle/make_tokenizer_fixtures.py
Writes tests/data/tokenizer_fixtures.json: {"corpus": [text...], "gpt2": [[ids]...], "qwen3": [[ids]...]}.

GPT-2 is built from encoder.json + vocab.bpe exactly as GPT2TokenizerFast does it: BPE model,
ByteLevel pre-tokenizer (GPT-2 regex, no prefix space), ByteLevel decoder, <|endoftext|> special.
Qwen3 is loaded from its tokenizer.json. Ids are encoded with add_special_tokens=False (neither
tokenizer adds any, and the engine never adds BOS/EOS in encode).
"""
import json
import os
import unicodedata

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")


def gpt2_tokenizer():
    folder = os.path.join(DATA, "tokenizers", "gpt2")
    bpe = models.BPE.from_file(os.path.join(folder, "encoder.json"), os.path.join(folder, "vocab.bpe"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return tok


def qwen3_tokenizer():
    return Tokenizer.from_file(os.path.join(DATA, "tokenizers", "qwen3", "tokenizer.json"))


def corpus():
    decomposed = unicodedata.normalize("NFD", "café naïve Ångström résumé")
    return [
        "",
        "Hello world",
        "Hello, world! How are you?",
        " leading space",
        "trailing space ",
        "  two   spaces    four",
        "line one\nline two\n\nline four\r\nwindows\rold mac",
        "\n\n\n",
        "tabs\tand\t\tmore\ttabs \t mixed",
        "   \n  \t \n",
        "digits 0 12 345 6789 1234567890 3.14159 -42 1e10 1,000,000",
        "a long number 98765432109876543210123456789",
        "it's don't they're we've I'm you'll he'd",
        "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D It'S",
        "quotes 'single' \"double\" `back` ''",
        "punctuation!!! ??? ... ;;; --- ((())) [x] {y} <z> @#$%^&*_+=|\\/~",
        "email: someone@example.com url: https://example.org/a/b?c=d&e=f#g",
        "code: def f(x):\n    return x**2  # square\n",
        "中文测试：你好，世界。",
        "日本語のテキストとカタカナ、ひらがな。",
        "한국어 텍스트입니다",
        "emoji 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️",
        "flags 🇫🇷🇯🇵 and keycap 1️⃣",
        decomposed,
        unicodedata.normalize("NFC", decomposed),
        "e\u0301 a\u0308 o\u0302\u0323 combining",
        "Ω ≈ ∑ ∞ ≠ √ π µ ﬁ ligature ｆｕｌｌｗｉｄｔｈ",
        "Ελληνικά Русский текст עברית العربية हिन्दी",
        "nbsp\u00a0here thin\u2009space ideographic\u3000space nel\u0085x zwsp\u200bx",
        "<|endoftext|>",
        "before<|endoftext|>after",
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n",
        "<think>\nreasoning\n</think>\n\nanswer",
        "<|im_start|><|im_end|><|endoftext|>",
        "almost special <|im_start| and <|endoftext",
        "Mixed CASE WordsAndCamelCase snake_case kebab-case",
        "a" * 300,
        " ".join(["repetition"] * 50),
        "The quick brown fox jumps over the lazy dog. " * 3,
    ]


def main():
    texts = corpus()
    fixtures = {"corpus": texts}
    for name, tok in (("gpt2", gpt2_tokenizer()), ("qwen3", qwen3_tokenizer())):
        ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
        for t, i in zip(texts, ids):
            assert tok.decode(i, skip_special_tokens=False) == (
                unicodedata.normalize("NFC", t) if name == "qwen3" else t), (name, t)
        fixtures[name] = ids
    path = os.path.join(DATA, "tokenizer_fixtures.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(fixtures, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}: {len(texts)} texts")


if __name__ == "__main__":
    main()
