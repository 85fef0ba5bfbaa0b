"""Renders the chat templates of the model families llorch runs, as the
Python tooling those templates are written for renders them (Jinja2 in a
sandbox, trim_blocks and lstrip_blocks on, loop controls, raise_exception
and strftime_now), into the golden files of
crates/worker-tokenizer/tests/chat_templates.rs.

The templates are those llama.cpp ships in the llama-cpp-python 0.3.36
sdist (models/templates); the conversations, the special tokens and the
time are in tests/fixtures/chat_templates/cases.json. A template that
refuses the conversation (raise_exception) gets a file with its message. Not run in CI: the
tests use the committed files.

    pip install -r scripts/reference/requirements.txt   # in any venv
    python scripts/reference/gen-chat-templates.py
"""

import datetime
import json
import os
import pathlib
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates/worker-tokenizer/tests/fixtures/chat_templates"


def llama_cpp_src() -> pathlib.Path:
    if "LLORCH_LLAMA_CPP_SRC" in os.environ:
        return pathlib.Path(os.environ["LLORCH_LLAMA_CPP_SRC"])
    cache = pathlib.Path(os.environ.get("LLORCH_CACHE", pathlib.Path.home() / ".cache/llorch"))
    return cache / "llama.cpp/src-0.3.36"


def main() -> int:
    cases = json.loads((FIXTURES / "cases.json").read_text())
    now = datetime.datetime.fromtimestamp(cases["now_secs"], tz=datetime.timezone.utc)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def strftime_now(fmt):
        return now.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    templates = llama_cpp_src() / "models/templates"
    for case in cases["templates"]:
        source = (templates / case["file"]).read_text()
        for i, messages in enumerate(cases["conversations"]):
            try:
                text = env.from_string(source).render(messages=messages,
                                                      add_generation_prompt=True,
                                                      bos_token=case["bos"],
                                                      eos_token=case["eos"])
            except jinja2.exceptions.TemplateError as e:
                # A template that refuses the conversation: the test
                # expects the same refusal.
                text = f"raise_exception: {e}"
            out = FIXTURES / (case["file"].removesuffix(".jinja") + f".{i}.txt")
            out.write_text(text)
            print(f"wrote {out.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
