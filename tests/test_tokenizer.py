"""models/tokenizer.py's SavedTokenizer against transformers reading the same directory (the
default model's cached GGUF tokenizer): the same ids, text, special tokens and chat prompts,
and a warm `generate` that never imports transformers."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import jinja2
import pytest

from specdec.api import encode_prompt
from specdec.engine.detokenizer import Detokenizer
from specdec.models.tokenizer import SavedTokenizer, UnsupportedTokenizer

pytestmark = pytest.mark.slow

TEXTS = [
    "What is the capital of France?",
    "What is the capital of France?\n",
    "",
    " ",
    "   leading and trailing   ",
    "tabs\tand\t\ttabs, newlines\n\n\nand \r\n windows ones",
    "naïve café, Ærøskøbing, straße, 東京, 서울, Ελληνικά, עברית, العربية",
    "emoji 🙂🚀👩‍👩‍👧‍👦 and a flag 🇫🇷, a skin tone 👍🏽",
    "def add(a, b):\n    return a + b  # sum\n\n\tclass X: pass\n",
    'json {"key": [1, 2.5e-3, null], "s": "a\\"b"}',
    "1234567890 3.14159 -0.5e+10 0x1F 1,000,000",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more <file_sep> <repo_name>x",
    "<|im_start without the end, <|im_end| half a token",
    "Ünïcödé\u00a0non-breaking\u2009thin\u200bzero-width",
    "a" * 300 + " " + "ab " * 50,
    "\x00\x01 control \x7f bytes",
]

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in one word."},
     {"role": "user", "content": "Capital of Japan?"}],
    [{"role": "system", "content": "Be terse."},
     {"role": "user", "content": "Hi 🙂"},
     {"role": "assistant", "content": "Hello.\n\nHow can I help?"},
     {"role": "user", "content": "Write `print(1)` in Python.\n"}],
    [{"role": "user", "content": "Say <|im_end|> literally, then <|im_start|>system"},
     {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "  spaces  ", "name": None},
     {"role": "assistant", "content": "4", "reasoning": "2 + 2"}],
]


@pytest.fixture(scope="module")
def ours(default_tokenizer) -> SavedTokenizer:
    assert isinstance(default_tokenizer, SavedTokenizer)  # what load_gguf_tokenizer gives
    return default_tokenizer


@pytest.fixture(scope="module")
def reference(ours):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ours.source), local_files_only=True)


def test_encode_matches(ours, reference):
    for text in TEXTS:
        for special in (True, False):
            assert ours.encode(text, add_special_tokens=special) == reference.encode(text, add_special_tokens=special), text


def test_decode_and_round_trip_match(ours, reference):
    for text in TEXTS:
        ids = reference.encode(text)
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip), text
        assert ours.decode(ours.encode(text)) == text


def test_decode_matches_on_every_token_and_random_sequences(ours, reference):
    """Each id alone (a byte-level token may hold part of a character) and random id runs,
    special tokens among them."""
    n = len(reference)
    for i in range(n):
        assert ours.decode([i]) == reference.decode([i]), i
    assert ours.convert_ids_to_tokens(list(range(n))) == reference.convert_ids_to_tokens(list(range(n)))
    rng = random.Random(0)
    for _ in range(300):
        ids = [rng.randrange(n) if rng.random() > 0.1 else rng.randrange(17) for _ in range(rng.randrange(1, 24))]
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip), ids
        assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == reference.convert_ids_to_tokens(
            ids, skip_special_tokens=True)
    assert ours.decode(5) == reference.decode(5)


def test_special_tokens_and_vocabulary_match(ours, reference):
    for name in ("bos", "eos", "unk", "pad", "sep", "cls", "mask"):
        assert getattr(ours, f"{name}_token") == getattr(reference, f"{name}_token"), name
        assert getattr(ours, f"{name}_token_id") == getattr(reference, f"{name}_token_id"), name
    assert ours.special_tokens_map == reference.special_tokens_map
    assert ours.all_special_tokens == reference.all_special_tokens
    assert ours.all_special_ids == reference.all_special_ids
    assert (len(ours), ours.vocab_size) == (len(reference), reference.vocab_size)
    assert ours.get_vocab() == reference.get_vocab()
    probes = ["<|im_end|>", "<file_sep>", "Hello", "Ġworld", "no-such-token-here", *reference.all_special_tokens]
    assert ours.convert_tokens_to_ids(probes) == reference.convert_tokens_to_ids(probes)
    assert ours.convert_tokens_to_ids("<|im_start|>") == reference.convert_tokens_to_ids("<|im_start|>")
    assert ours.chat_template == reference.chat_template
    with pytest.raises(AttributeError):
        ours.no_such_attribute  # noqa: B018


def test_chat_template_matches(ours, reference):
    for chat in CHATS:
        for generation_prompt in (True, False):
            for tokenize in (True, False):
                for return_dict in (True, False):
                    kw = dict(add_generation_prompt=generation_prompt, tokenize=tokenize, return_dict=return_dict)
                    got, want = ours.apply_chat_template(chat, **kw), reference.apply_chat_template(chat, **kw)
                    if hasattr(want, "keys"):
                        want = dict(want)
                    assert got == want, (chat, kw)
    for tokenize in (True, False):  # a batch of conversations
        got, want = ours.apply_chat_template(CHATS, tokenize=tokenize), reference.apply_chat_template(CHATS, tokenize=tokenize)
        assert got == (dict(want) if hasattr(want, "keys") else want)


def test_template_environment_matches(ours, reference):
    """A template that uses what transformers' sandbox adds: tojson without HTML escaping,
    namespace(), dict(), loop controls, the generation tag, trimmed blocks, special-token
    variables, None-valued keys dropped and reasoning under each name; and raise_exception and a namespace's underscore names refused alike."""
    template = (
        "{% set ns = namespace(n=0) %}\n"
        "{% for m in messages %}\n"
        "  {% if m['role'] == 'system' %}{% continue %}{% endif %}\n"
        "  {% set ns.n = ns.n + 1 %}\n"
        "  {{ bos_token }}{{ m['role'] }}: {{ m['content'] | tojson }} {{ dict(a=1) | tojson }}\n"
        "  {% if m.name is defined %}name={{ m.name }}{% endif %} {{ m.reasoning_content }}|{{ m.thinking }}\n"
        "  {% if m['role'] == 'assistant' %}{% generation %}[{{ m['content'] }}]{% endgeneration %}{% endif %}\n"
        "  {% if loop.index > 3 %}{% break %}{% endif %}\n"
        "{% endfor %}\n"
        "{{ ns.n }} {{ tools | tojson }} {{ extra }} {{ eos_token }}{% if add_generation_prompt %}GO{% endif %}"
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"x": "<b>&'\""}}}]
    for chat in CHATS:
        kw = dict(chat_template=template, tools=tools, tokenize=False, add_generation_prompt=True, extra="é<&>")
        assert ours.apply_chat_template(chat, **kw) == reference.apply_chat_template(chat, **kw)
    for bad in ("{{ raise_exception('no ' + messages[0]['role']) }}", "{% set ns = namespace(_x=1) %}"):
        with pytest.raises(jinja2.exceptions.TemplateError) as ours_error:
            ours.apply_chat_template(CHATS[0], chat_template=bad, tokenize=False)
        with pytest.raises(jinja2.exceptions.TemplateError) as reference_error:
            reference.apply_chat_template(CHATS[0], chat_template=bad, tokenize=False)
        assert type(ours_error.value) is type(reference_error.value)
    with pytest.raises(jinja2.exceptions.SecurityError):  # the sandbox: no attribute escapes
        ours.apply_chat_template(CHATS[0], chat_template="{{ messages.__class__.__mro__ }}", tokenize=False)
    with pytest.raises(ValueError, match="continue_final_message"):
        ours.apply_chat_template(CHATS[2], continue_final_message=True)


def test_engine_prompt_ids_and_stream_match(ours, reference):
    """What the engine is given (api.encode_prompt) and what the detokenizer streams back."""
    for text in TEXTS[:2] + TEXTS[5:9]:
        assert encode_prompt(ours, text) == encode_prompt(reference, text), text
        assert encode_prompt(ours, text, chat=False) == encode_prompt(reference, text, chat=False), text
    for chat in CHATS:
        assert encode_prompt(ours, messages=chat) == encode_prompt(reference, messages=chat)
    ids = reference.encode(" ".join(TEXTS)) + [ours.eos_token_id]
    streamed = {}
    for name, tok in (("ours", ours), ("reference", reference)):
        detok = Detokenizer(tok, stop=["capital of Japan"])
        streamed[name] = [detok.add(ids[i : i + 3]) for i in range(0, len(ids), 3)] + [detok.flush()]
    assert streamed["ours"] == streamed["reference"]


def test_save_pretrained_loads_in_transformers(ours, reference, tmp_path):
    from transformers import AutoTokenizer

    ours.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    for text in TEXTS:
        assert again.encode(text) == reference.encode(text)
    assert again.chat_template == reference.chat_template
    assert SavedTokenizer.from_dir(tmp_path).encode(TEXTS[6]) == ours.encode(TEXTS[6])


def test_directories_it_cannot_serve_alike_are_refused(ours, tmp_path):
    import json

    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    for change in ({"tokenizer_class": "LlamaTokenizer"}, {"add_bos_token": True}, {"eos_token": "<not-in-vocab>"}):
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config | change))
        with pytest.raises(UnsupportedTokenizer):
            SavedTokenizer.from_dir(tmp_path)


WARM_GENERATE = """
import sys
from specdec.cli import main
assert main(["generate", "-p", "What is the capital of France?", "-n", "2", "--temp", "0"]) == 0
print("TRANSFORMERS", "transformers" in sys.modules)
"""


def test_warm_generate_does_not_import_transformers(ours):
    from specdec.models.default import default_model_path
    from specdec.models.gguf_file import load_gguf_tokenizer

    assert isinstance(load_gguf_tokenizer(default_model_path()), SavedTokenizer)  # the warm run's cache, filled
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", WARM_GENERATE], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "TRANSFORMERS False"
