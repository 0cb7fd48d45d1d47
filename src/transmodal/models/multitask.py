"""One model, many tasks (OFA, issue 12 part 4): per-task embedders, one body, one decoder.

    task t:  x (B, C_t, *spatial_t) -> embedders[t] -> (B, S_t, D)
             instruction_t's words -> the body's own word embeddings -> (T_t, D)
             [instruction ; input tokens] (B, T_t + S_t, D) -> body -> (B, T_t + S_t, D')
             -> heads[t]: the shared decoder, restricted to task t's label trie -> (B, K_t, 4)

Every ``heads[t]`` is a ``GenerateHead`` over the *same* decoder and memory projection (the
modules are shared, not copied): a task owns only its trie (label token ids, no weights), its
memory statistics (``--head-norm batch``: a TokenNorm's running mean and variance, buffers, no
weights: each task's embedder makes other tokens) and its embedder. So adding a task adds an
embedder and a trie, never a head. The tied, shared tensors are stored once
(``model.tied_duplicates``).

The instruction's token ids are fixed per task (tokenised once by the body's own tokenizer,
``text_tower.load_tokenizer``) and stored in the model file; the word embeddings they index are
the body's input embeddings, which ``--tune`` keeps frozen (the embedder replaces them for the
input's tokens), so instructions stay in the pretrained vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, DataError
from .heads import build_head
from .model import ModelSpec, architecture_mismatch, body_of, tied_duplicates

FORMAT = "transmodal-multitask/1"


class MultiTaskModel(nn.Module):
    """(B, C_t, *spatial_t) inputs of task ``t`` -> the generate head's (B, K_t, 4) outputs."""

    def __init__(self, body: nn.Module, embedders: dict[str, nn.Module], heads: dict[str, nn.Module],
                 spec: ModelSpec, tasks: list[dict[str, Any]]) -> None:
        super().__init__()
        self.body = body
        self.embedders = nn.ModuleDict(embedders)
        self.heads = nn.ModuleDict(heads)  # GenerateHeads sharing one decoder and projection
        self.spec = spec  # the shared part: body, decoder config, decode mode
        # per task: name, instruction(_ids), in_channels, spatial, generate (labels, their ids)
        self.tasks = {t["name"]: t for t in tasks}

    @property
    def head(self) -> nn.Module:
        """The first task's head: what ``--tune`` rules ask for; every head shares its decoder."""
        return next(iter(self.heads.values()))

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def check_task(self, name: str) -> None:
        if name not in self.tasks:
            raise ConfigError(f"this run knows no task {name!r}; its tasks are "
                              f"{', '.join(self.tasks)} (--task-name NAME)")

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        tokens = self.embedders[task](x)  # (B, S, D)
        ids = torch.tensor(self.tasks[task]["instruction_ids"], device=tokens.device)
        words = word_embeddings(self.body)(ids).to(tokens.dtype)  # (T, D)
        seq = torch.cat([words.expand(len(x), -1, -1), tokens], 1)  # (B, T + S, D)
        hidden, grid = self.body.encode(seq, (seq.shape[1],))  # (B, T + S, D')
        return self.heads[task](hidden, grid)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """The body's and the shared decoder's warm-started weights (once: the heads share it)."""
        return list(self.body.parameters()) + self.head.pretrained_parameters()

    def added_parameters(self, task: str) -> int:
        """Parameters that task ``task`` alone owns: its embedder (its trie has none)."""
        return sum(p.numel() for p in self.embedders[task].parameters())


class TaskView(nn.Module):
    """The multi-task model answering one task: a plain ``model(x)`` for ``Run`` and
    ``predict_outputs``. It holds the shared model; it owns no weights."""

    def __init__(self, model: MultiTaskModel, task: str) -> None:
        super().__init__()
        model.check_task(task)
        self.model, self.task = model, task
        self.spec = model.spec
        self.head = model.heads[task]

    @property
    def body(self) -> nn.Module:
        """The shared body (a property: registering it again would duplicate its weights)."""
        return self.model.body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.task)


def word_embeddings(body: nn.Module) -> nn.Module:
    """The body's own token-embedding layer (instructions are placed in its vocabulary)."""
    model = getattr(body, "model", None)
    layer = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if body.source_modality != "text" or layer is None:
        raise ConfigError(f"several tasks in one model put an instruction's words before the input: "
                          f"they need a text body with word embeddings (minilm, a BERT folder); "
                          f"{body.family!r} has none")
    return layer


def tokenise_instruction(body_path: str, text: str) -> list[int]:
    """The instruction's token ids in the body's vocabulary (no special tokens)."""
    from .text_tower import load_tokenizer

    ids = load_tokenizer(body_path)(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise DataError(f"the instruction {text!r} tokenises to nothing; give it words")
    return [int(i) for i in ids]


def _task_spec(spec: ModelSpec, task: dict[str, Any]) -> ModelSpec:
    """The single-task spec of one task: its input shape and its label set over the shared decoder."""
    return dataclasses.replace(spec, in_channels=task["in_channels"], spatial=list(task["spatial"]),
                               n_outputs=len(task["generate"]["labels"]),
                               generate={**spec.generate, **task["generate"]})


def add_task_modules(model: MultiTaskModel, task: dict[str, Any], shared: nn.Module | None = None
                     ) -> None:
    """Build task ``task``'s embedder and its head over the shared decoder (``shared``: the
    head whose decoder and projection to share; None: the model's first head). Its labels are
    tokenised here when new; a stored task brings its ids."""
    from .heads.generate import GenerateHead, label_tokens
    from .trie import LabelTrie

    spec = _task_spec(model.spec, task)
    embedder = model.body.build_input(spec)
    _check_tokens(model.body, task, embedder)
    shared = shared if shared is not None else next(iter(model.heads.values()))
    gen = task["generate"]
    if "label_ids" not in gen:  # a new task: its labels in the decoder's vocabulary
        gen.update(label_tokens({**model.spec.generate, **gen}, shared.decoder, model.body, spec))
    trie = LabelTrie(gen["label_ids"], gen["start"], gen["end"], gen["pad"])
    head = GenerateHead(model.body.out_dim, shared.decoder, trie, model.spec.generate["decode"],
                        model.spec.generate.get("memory_norm", "none"))
    head.proj = shared.proj  # one memory projection for every task; its own memory statistics
    model.embedders[task["name"]] = embedder
    model.heads[task["name"]] = head
    model.tasks[task["name"]] = task


def build_multitask(spec: ModelSpec, tasks: list[dict[str, Any]], rebuild: bool = False
                    ) -> MultiTaskModel:
    """A new multi-task model (pretrained body, decoder warm-started as for one task), or with
    ``rebuild`` the stored architecture (weights load next). ``tasks``: name, instruction_ids,
    in_channels, spatial and generate (labels; label_ids once tokenised)."""
    body = body_of(spec, rebuild)
    if not rebuild:
        spec.body_config = body.stored_config()
    word_embeddings(body)  # a text body, or one clear error
    first, rest = tasks[0], tasks[1:]
    first_spec = _task_spec(spec, first)
    embedder = body.build_input(first_spec)
    head = build_head("generate", body, embedder.grid, first_spec)  # warm start (or the stored config)
    gen = first_spec.generate
    first["generate"].update({k: gen[k] for k in ("label_ids", "start", "end", "pad")})
    spec.generate = {k: gen[k] for k in ("text_body", "decode", "decoder_config", "decoder",
                                         "memory_norm") if k in gen}
    model = MultiTaskModel(body, {first["name"]: embedder}, {first["name"]: head}, spec, [])
    model.tasks[first["name"]] = first
    _check_tokens(body, first, embedder)
    for task in rest:
        add_task_modules(model, task, head)
    return model


def _check_tokens(body: nn.Module, task: dict[str, Any], embedder: nn.Module) -> None:
    """Instruction and input together within the body's positions (one clear error)."""
    words = len(task["instruction_ids"])
    n = words + math.prod(embedder.grid)
    if n > body.max_tokens:
        raise DataError(f"task {task['name']!r}: its instruction ({words} tokens) and its input "
                        f"({n - words} tokens) make {n}; the body takes at most {body.max_tokens}: "
                        "shorten the instruction or lower --max-tokens")


# ----------------------------------------------------------------------------- disk


def save_multitask(model: MultiTaskModel, folder: Path, extra: dict[str, Any]) -> None:
    """``model.safetensors`` (shared tensors once) and ``model.json`` (spec, tasks, ``extra``)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state = {k: v for k, v in state.items() if k not in tied_duplicates(state)}
    tmp = folder / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": FORMAT})
    tmp.replace(folder / "model.safetensors")
    meta = {"format": FORMAT, "spec": model.spec.to_dict(), "tasks": list(model.tasks.values()),
            **extra}
    tmp_json = folder / "model.json.tmp"
    tmp_json.write_text(json.dumps(meta, indent=1, default=str))
    tmp_json.replace(folder / "model.json")


def is_multitask_folder(folder: Path) -> bool:
    path = Path(folder) / "model.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except json.JSONDecodeError:
        return False  # load_model says the file is damaged


def load_multitask(folder: Path) -> tuple[MultiTaskModel, dict[str, Any]]:
    """Rebuild from JSON and load the safetensors weights (no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / "model.json").read_text())
    model = build_multitask(ModelSpec.from_dict(meta["spec"]), meta["tasks"], rebuild=True)
    weights = folder / "model.safetensors"
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e}); it may be "
                              "truncated: re-copy the run folder") from None
    full = model.state_dict()
    ours = {k: v for k, v in full.items() if k not in tied_duplicates(full)}
    mismatch = architecture_mismatch(ours, state)
    if mismatch:
        raise CheckpointError(f"{weights} does not match the architecture in model.json "
                              f"({mismatch}): re-copy the whole run folder")
    model.load_state_dict(state, strict=False)  # the shared tensors fill their other names
    return model, meta
