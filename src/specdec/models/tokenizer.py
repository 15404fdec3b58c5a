"""A tokenizer read from the files transformers' `save_pretrained` writes, without transformers.

`SavedTokenizer.from_dir` loads tokenizer.json with the `tokenizers` package and the special
tokens and chat template from tokenizer_config.json (and chat_template.jinja), and answers
what the engine, server, bench and train ask of a tokenizer with transformers' results for
the same directory: encode, decode (skipping special tokens or not), token <-> id, the
special tokens and their ids, vocabulary sizes, the chat template rendered as transformers
renders it (a sandboxed jinja2 environment set up alike), and save_pretrained.
tests/test_tokenizer.py holds it to transformers' answers on the default model.

Importing transformers takes seconds; `tokenizers` and jinja2 import in a fraction of that,
which is what a warm start needs. Only directories whose tokenizer_config.json names
transformers' generic tokenizers-backed class and holds nothing else that changes how text
is tokenized are served; `from_dir` raises `UnsupportedTokenizer` for the rest, and the caller
uses transformers.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

# transformers' named special tokens, in the order it lists them (all_special_tokens).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# tokenizer_config.json keys whose meaning SavedTokenizer reproduces (or that do not change
# tokenization); any other key sends the directory to transformers.
KNOWN_CONFIG_KEYS = frozenset(SPECIAL_TOKEN_NAMES) | {
    "tokenizer_class", "backend", "is_local", "local_files_only", "name_or_path", "model_max_length",
    "padding_side", "truncation_side", "clean_up_tokenization_spaces",
    "split_special_tokens", "chat_template", "extra_special_tokens", "additional_special_tokens",
}

# apply_chat_template options of transformers that SavedTokenizer does not implement.
UNSUPPORTED_CHAT_OPTIONS = ("continue_final_message", "return_assistant_tokens_mask", "sanitize_control_tokens",
                            "return_tensors", "padding", "truncation", "max_length", "tokenizer_kwargs")

# Names a message's reasoning may come under; templates read the first (transformers aliases them).
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class UnsupportedTokenizer(ValueError):
    """The directory needs transformers' own class (`tokenizer_class`) to tokenize as transformers does."""

    def __init__(self, message: str, tokenizer_class: str | None) -> None:
        super().__init__(message)
        self.tokenizer_class = tokenizer_class


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json spells it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class SavedTokenizer:
    def __init__(self, backend: Tokenizer, config: dict, chat_template: str | dict[str, str] | None,
                 source: Path | None = None) -> None:
        self._tokenizer = backend
        self.source = source
        self.chat_template = chat_template
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        backend.encode_special_tokens = bool(config.get("split_special_tokens", False))
        named = {name: _token_text(config.get(name)) for name in SPECIAL_TOKEN_NAMES}
        extra = config.get("extra_special_tokens", config.get("additional_special_tokens")) or []
        if isinstance(extra, dict):  # model-specific named tokens (image_token, ...)
            named.update({name: _token_text(v) for name, v in extra.items()})
            extra = []
        self.special_tokens_map = {name: tok for name, tok in named.items() if tok is not None}
        self.extra_special_tokens = [_token_text(t) for t in extra]
        missing = [t for t in (*self.special_tokens_map.values(), *self.extra_special_tokens)
                   if backend.token_to_id(t) is None]
        if missing:  # transformers would add them to the vocabulary
            raise UnsupportedTokenizer(f"special tokens {missing} are not in the vocabulary",
                                       config.get("tokenizer_class"))
        self.all_special_tokens = list(dict.fromkeys([*self.special_tokens_map.values(), *self.extra_special_tokens]))
        self.all_special_ids = [backend.token_to_id(t) for t in self.all_special_tokens]

    @classmethod
    def from_dir(cls, directory: str | Path) -> SavedTokenizer:
        directory = Path(directory)
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        name = config.get("tokenizer_class")
        if name != "TokenizersBackend":
            raise UnsupportedTokenizer(f"{directory}: tokenizer class {name!r}", name)
        unknown = sorted(set(config) - KNOWN_CONFIG_KEYS)
        if unknown:
            raise UnsupportedTokenizer(f"{directory}: tokenizer_config.json keys {unknown}", name)
        backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
        if backend.padding is not None or backend.truncation is not None or backend.post_processor is None:
            raise UnsupportedTokenizer(f"{directory}: tokenizer.json sets padding, truncation or no post-processor", name)
        if (directory / "additional_chat_templates").is_dir():
            raise UnsupportedTokenizer(f"{directory}: named chat templates in additional_chat_templates/", name)
        template_file = directory / "chat_template.jinja"
        if template_file.is_file():
            chat_template = template_file.read_text(encoding="utf-8")
        else:
            chat_template = config.get("chat_template")
            if isinstance(chat_template, list):  # named templates
                chat_template = {t["name"]: t["template"] for t in chat_template}
        return cls(backend, config, chat_template, directory)

    # -- vocabulary ---------------------------------------------------------------------

    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """The base vocabulary, without added tokens."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def __getattr__(self, name: str):
        """bos_token, eos_token_id, pad_token, ... (None when the tokenizer has no such token)."""
        base = name[:-3] if name.endswith("_id") else name
        if base in SPECIAL_TOKEN_NAMES or (base.endswith("_token") and base in self.__dict__.get("special_tokens_map", {})):
            token = self.special_tokens_map.get(base)
            if name == base or token is None:
                return token
            return self.convert_tokens_to_ids(token)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | None | list[int | None]:
        if isinstance(tokens, str):
            index = self._tokenizer.token_to_id(tokens)
            if index is None:
                unk = self.special_tokens_map.get("unk_token")
                return None if unk is None else self._tokenizer.token_to_id(unk)
            return index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int], skip_special_tokens: bool = False) -> str | None | list[str]:
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(int(i)) for i in ids if int(i) not in skip]

    # -- text -----------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids: int | list[int], skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        if hasattr(token_ids, "tolist"):  # a tensor or an array
            token_ids = token_ids.tolist()
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        text = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        # transformers never cleans up after a BPE model: it would drop real spaces before punctuation
        if clean and type(self._tokenizer.model).__name__ != "BPE":
            text = _clean_up_tokenization(text)
        return text

    # -- chat -----------------------------------------------------------------------------

    def get_chat_template(self, chat_template: str | None = None, tools: list[dict] | None = None) -> str:
        """The template to render: the argument (a template, or a name among named templates),
        else the tokenizer's (its "tool_use" template when tools are given, else "default")."""
        if isinstance(self.chat_template, dict):
            if chat_template is not None and chat_template in self.chat_template:
                return self.chat_template[chat_template]
            if chat_template is None:
                name = "tool_use" if tools is not None and "tool_use" in self.chat_template else "default"
                if name not in self.chat_template:
                    raise ValueError(f"this tokenizer has several chat templates ({sorted(self.chat_template)}) "
                                     "and no default; name one")
                return self.chat_template[name]
        elif chat_template is None:
            if self.chat_template is None:
                raise ValueError("this tokenizer has no chat template; pass one")
            return self.chat_template
        return chat_template

    def apply_chat_template(self, conversation: list[dict] | list[list[dict]], tools: list[dict] | None = None,
                            documents: list[dict] | None = None, chat_template: str | None = None,
                            add_generation_prompt: bool = False, tokenize: bool = True, return_dict: bool = True,
                            **template_kwargs):
        """transformers' apply_chat_template: the rendered text (tokenize=False), the token ids
        (return_dict=False), or {"input_ids", "attention_mask"}; a list of conversations gives
        a list of each."""
        unsupported = [k for k in UNSUPPORTED_CHAT_OPTIONS if template_kwargs.get(k)]
        if unsupported:
            raise ValueError(f"apply_chat_template: {', '.join(unsupported)} not supported by {type(self).__name__}")
        for k in UNSUPPORTED_CHAT_OPTIONS:
            template_kwargs.pop(k, None)
        if not conversation:
            raise ValueError("cannot apply the chat template to an empty conversation")
        batched = isinstance(conversation[0], (list, tuple))
        template = compile_chat_template(self.get_chat_template(chat_template, tools))
        if tools is not None and not all(isinstance(t, dict) for t in tools):
            raise ValueError("tools must be JSON schemas (dicts)")
        if documents is not None and not all(isinstance(d, dict) for d in documents):
            raise TypeError("documents must be dicts with 'title' and 'text' keys")
        context = _plain({**self.special_tokens_map, **template_kwargs})
        outputs = []
        for chat in conversation if batched else [conversation]:
            messages = [_template_message(m) for m in chat]
            text = template.render(messages=messages, tools=_plain(tools), documents=_plain(documents),
                                   add_generation_prompt=add_generation_prompt, **context)
            if tokenize:
                ids = self.encode(text, add_special_tokens=False)
                text = {"input_ids": ids, "attention_mask": [1] * len(ids)} if return_dict else ids
            outputs.append(text)
        if not batched:
            return outputs[0]
        if tokenize and return_dict:
            return {key: [o[key] for o in outputs] for key in ("input_ids", "attention_mask")}
        return outputs

    # -- files ----------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> tuple[str, ...]:
        """Copy the tokenizer files it was loaded from into `directory` (transformers loads them)."""
        if self.source is None:
            raise ValueError("this tokenizer was not loaded from a directory; nothing to save")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        saved = []
        for name in ("tokenizer_config.json", "tokenizer.json", "chat_template.jinja", "special_tokens_map.json"):
            if (self.source / name).is_file():
                shutil.copyfile(self.source / name, out / name)
                saved.append(str(out / name))
        return tuple(saved)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={str(self.source)!r}, vocab={len(self)}, special={self.special_tokens_map})"


def _clean_up_tokenization(text: str) -> str:
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


def _plain(value):
    """Plain JSON-like data for the template: str/int/float subclasses (enums, numpy scalars)
    become their base type, anything else non-JSON a placeholder naming its type, so the
    sandboxed template sees no object methods."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:  # a numpy scalar
        return _plain(value.item())
    return f"<{type(value).__name__}>"


def _template_message(message) -> dict:
    """A message as transformers hands it to the template: keys whose value is None dropped,
    reasoning under each name templates read."""
    if not isinstance(message, dict):
        raise TypeError(f"chat messages must be dicts, got {message!r}")
    message = {k: v for k, v in _plain(message).items() if v is not None}
    reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is not None:
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message


@lru_cache(maxsize=8)
def compile_chat_template(source: str):
    """A chat template compiled in a sandbox set up as transformers sets up its own: blocks
    trimmed, `tojson` without HTML escaping, raise_exception, strftime_now, a safe dict() and
    namespace(), loop controls, and the {% generation %} tag (rendered as its body)."""
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class TemplateNamespace(jinja2.utils.Namespace):
        """namespace() that refuses underscore names, which could reach interpreter internals."""

        def __init__(*args, **kwargs):
            self, attrs = args[0], dict(*args[1:], **kwargs)
            for name in attrs:
                TemplateNamespace.check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace.check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")

    class TemplateDict:
        """dict() and dict.fromkeys() without the dict type itself."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env.from_string(source)
