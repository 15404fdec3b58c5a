"""MkDocs hook: pages that are generated from the code, so they cannot drift from it.

- `<!-- generated: cli-reference -->` becomes every subcommand's `--help`, read from
  `specdec.cli.build_parser()` (every subparser registered);
- `<!-- generated: server-parameters -->` becomes the table of every request field the
  server's pydantic models accept, with its status. A field without a note below fails the
  build, so a new parameter cannot go undocumented.
"""

from __future__ import annotations

import argparse
import os

BOOKKEEPING = "accepted; bookkeeping only, it cannot change the output"

# field -> what the server does with it (status: supported, refused (400), accepted)
NOTES = {
    "model": ("supported", "the served model's id or an alias of it; another name is a 404"),
    "max_tokens": ("supported", "prompt + max_tokens beyond the context is a 400; default: 16 for completions, "
                   "the rest of the context for chat"),
    "max_completion_tokens": ("supported", "chat's newer name for max_tokens; wins over it when both are set"),
    "temperature": ("supported", "0 to 2; 0 is greedy"),
    "top_p": ("supported", "(0, 1]"),
    "top_k": ("supported", "extension (vLLM's name); -1 or 0: all tokens"),
    "min_p": ("supported", "extension (vLLM's name); 0 to 1"),
    "seed": ("supported", "any 64-bit value; choice i of n uses seed + i, so a seeded request repeats exactly"),
    "stop": ("supported", "a string or up to 16 non-empty strings"),
    "stop_token_ids": ("supported", "extension (vLLM's name); ids outside the vocabulary are a 400"),
    "min_tokens": ("supported", "extension (vLLM's name); over max_tokens is a 400"),
    "stream": ("supported", "server-sent events, one chunk per engine step with text, then `data: [DONE]`"),
    "stream_options": ("supported", "`include_usage`; refused (400) when stream is false"),
    "n": ("supported", "1 to 16 choices, each its own row in the batch"),
    "presence_penalty": ("supported", "-2 to 2"),
    "frequency_penalty": ("supported", "-2 to 2"),
    "repetition_penalty": ("supported", "extension (vLLM's name); (0, 10]"),
    "logit_bias": ("supported", "keys are token ids as strings, values -100 to 100; other keys are a 400"),
    "ignore_eos": ("supported", "extension (vLLM's name)"),
    "spec_fates": ("supported", "specdec extension: stream each step's token fates (accepted, recovered, bonus, "
                   "plain) in a `spec` field"),
    "speculative": ("supported", "specdec extension: `false` runs this request without speculation"),
    "user": ("accepted", BOOKKEEPING),
    "metadata": ("accepted", BOOKKEEPING),
    "prompt_cache_key": ("accepted", BOOKKEEPING),
    "safety_identifier": ("accepted", BOOKKEEPING),
    "prompt": ("supported", "a string, token ids, or a list of one of either; a list of several prompts is a 400"),
    "echo": ("supported", "prepends the prompt; refused (400) together with logprobs"),
    "logprobs": ("supported", "completions: 0 to 20 top alternatives per token; chat: true/false"),
    "best_of": ("supported", "only equal to n (choices are not ranked); other values are a 400"),
    "messages": ("supported", "roles system, developer (as system), user, assistant, tool; text or text parts; "
                 "an empty list is a 400"),
    "top_logprobs": ("supported", "0 to 20; needs logprobs: true, else a 400"),
    "tool_choice": ("refused (400)", 'unless "none" or "auto" (there are no tools to choose)'),
    "parallel_tool_calls": ("accepted", "no tools, so nothing to parallelize; it cannot change the output"),
}


def _table(rows: list[list[str]]) -> str:
    lines = ["| parameter | endpoints | status | notes |", "|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def server_parameters() -> str:
    from specdec.server.protocol import NEUTRAL, ChatCompletionRequest, CompletionRequest

    completions, chat = set(CompletionRequest.model_fields), set(ChatCompletionRequest.model_fields)
    rows = []
    for name in dict.fromkeys([*CompletionRequest.model_fields, *ChatCompletionRequest.model_fields]):
        where = "both" if name in completions and name in chat else ("completions" if name in completions else "chat")
        if name in NEUTRAL:
            status, note = "refused (400)", f"unless unset or neutral: {NEUTRAL[name][1]}"
        elif name in NOTES:
            status, note = NOTES[name]
        else:
            raise ValueError(f"docs/hooks.py: the server accepts `{name}`, which NOTES does not document")
        rows.append([f"`{name}`", where, status, note])
    return _table(rows)


def cli_reference() -> str:
    from specdec.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal; fix the width
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["## specdec", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in subparsers.choices.items():
        parts += [f"## specdec {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


GENERATORS = {"<!-- generated: cli-reference -->": cli_reference,
              "<!-- generated: server-parameters -->": server_parameters}


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, generate in GENERATORS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown
