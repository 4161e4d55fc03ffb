"""Issue 20: the loader leaves the parameters requiring grad (frozen weights make torch's CPU
linear expand the output head per prompt, see test_engine_head_cost.py), so every pass must
run with autograd off or it would build a graph and keep every activation alive.

A whole run (residuals, profile, base scores, trials with both ablation variants, the
verification, the export's fold) goes on in this process under two watches: a global forward
hook that records any module output which requires grad, and autograd's saved-tensors hook,
which is called whenever any operation anywhere saves a tensor for a backward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from heretic.config.settings import Settings
from heretic.demo.data import demo_prompts
from heretic.demo.model import build_config, build_tokenizer
from heretic.engine.loading import load_model
from heretic.run.recipe import run


class GradWatch:
    def __init__(self) -> None:
        self.outputs: list[str] = []  # modules whose output required grad
        self.saved = 0  # tensors autograd saved for a backward pass

    @contextmanager
    def watching(self) -> Iterator[GradWatch]:
        def forward_hook(module: nn.Module, _args: object, output: object) -> None:
            first = output[0] if isinstance(output, (tuple, list)) and output else output
            logits = getattr(output, "logits", None)
            for tensor in (first, logits):
                if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
                    self.outputs.append(type(module).__name__)

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            self.saved += 1
            return tensor

        handle = nn.modules.module.register_module_forward_hook(forward_hook)
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                yield self
        finally:
            handle.remove()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-layer Llama with the demo tokenizer (the run's prompts are the demo's)."""
    folder = tmp_path_factory.mktemp("no-grad-model")
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(build_config(tokenizer, num_layers=3)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _prompt_files(root: Path) -> dict[str, str]:
    demo = demo_prompts()
    files = {}
    for key in ("harmful", "harmless", "harmful_eval", "harmless_eval"):
        path = root / f"{key}.txt"
        path.write_text("\n".join(getattr(demo, key)[:16]) + "\n", encoding="utf-8")
        files[f"{key}_prompts"] = str(path)
    return files


def test_the_watch_sees_a_graph_being_built(model_dir: Path) -> None:
    """The watch itself: a forward pass with autograd on is caught both ways."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    watch = GradWatch()
    with watch.watching():
        model(torch.tensor([[1, 2, 3]]))
    assert watch.outputs and watch.saved > 0


@pytest.mark.parametrize("ablation", ["standard", "norm-preserving"])
def test_a_whole_run_builds_no_autograd_graph(
    model_dir: Path, tmp_path: Path, ablation: str
) -> None:
    settings = Settings(
        model=str(model_dir),
        device_map="cpu",
        dtype="float32",
        trials=3,
        startup_trials=3,
        max_response_tokens=4,
        verify_response_tokens=4,
        verify_compare_tokens=4,
        ablation=ablation,
        max_changed_share=1.0,  # a random model's answers change with any edit: no damage gate
        output=tmp_path / "out",
        **_prompt_files(tmp_path),
    )
    watch = GradWatch()
    with watch.watching():
        result = run(settings)
    assert result.model_dir is not None and (result.model_dir / "config.json").is_file()
    assert watch.outputs == [], f"outputs requiring grad from {sorted(set(watch.outputs))}"
    assert watch.saved == 0, f"{watch.saved} tensors saved for a backward pass"


def test_the_loader_leaves_the_output_head_requiring_grad(model_dir: Path) -> None:
    """What keeps the head from being expanded per prompt (issue 20)."""
    loaded = load_model(Settings(model=str(model_dir), device_map="cpu", dtype="bfloat16"))
    head = loaded.model.get_output_embeddings()
    assert head is not None and head.weight.requires_grad
    assert not loaded.model.training
