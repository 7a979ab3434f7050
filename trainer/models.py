"""Networks: an MLP for tabular rows and a small CNN for image arrays.

Models are built from a plain ``ModelConfig`` so that DDP workers (other
processes) rebuild exactly the same architecture from JSON, and both networks
are TorchScript-able because they ship inside the exported artifact.
"""


from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from trainer.errors import TrainerError


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one network, JSON-serializable."""

    kind: str  # "mlp" or "cnn"
    n_outputs: int
    hidden_sizes: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    n_numeric: int = 0
    cardinalities: tuple[int, ...] = ()
    embedding_dim: int | None = None
    image_shape: tuple[int, ...] = ()
    cnn_channels: tuple[int, ...] = (16, 32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**fields)


def embedding_width(cardinality: int, fixed: int | None = None) -> int:
    """Embedding width growing sub-linearly with cardinality (fast.ai's rule), capped at 32."""
    if fixed:
        return fixed
    return max(2, min(32, round(1.6 * cardinality ** 0.56)))


def _head(n_in: int, hidden: Sequence[int], dropout: float, n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.ReLU(), nn.Dropout(dropout)]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class TabularMLP(nn.Module):
    """Standardized numerics concatenated with categorical embeddings, then an MLP."""

    def __init__(self, n_numeric: int, cardinalities: Sequence[int], hidden_sizes: Sequence[int],
                 dropout: float, n_outputs: int, embedding_dim: int | None = None):
        super().__init__()
        embeddings = [nn.Embedding(c, embedding_width(c, embedding_dim)) for c in cardinalities]
        self.embeddings = nn.ModuleList(embeddings)
        n_in = n_numeric + sum(e.embedding_dim for e in embeddings)
        if n_in == 0:
            raise TrainerError("the model has no input features")
        self.body = _head(n_in, hidden_sizes, dropout, n_outputs)

    def forward(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        parts: list[Tensor] = [x_num]
        for i, emb in enumerate(self.embeddings):
            parts.append(emb(x_cat[:, i]))
        return self.body(torch.cat(parts, dim=1))


class ImageCNN(nn.Module):
    """Conv-BN-ReLU-pool blocks, global average pooling, then an MLP head."""

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int], hidden_sizes: Sequence[int],
                 dropout: float, n_outputs: int):
        super().__init__()
        c_in = image_shape[0] if len(image_shape) == 3 else 1
        blocks: list[nn.Module] = []
        for c in channels:
            blocks += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = _head(c_in, hidden_sizes, dropout, n_outputs)

    def forward(self, image: Tensor) -> Tensor:
        x = image.unsqueeze(1) if image.dim() == 3 else image
        x = self.pool(self.features(x)).flatten(1)
        return self.head(x)


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.kind == "mlp":
        return TabularMLP(cfg.n_numeric, cfg.cardinalities, cfg.hidden_sizes, cfg.dropout, cfg.n_outputs,
                          cfg.embedding_dim)
    if cfg.kind == "cnn":
        if not cfg.image_shape:
            raise TrainerError("model 'cnn' needs an image dataset (image_shape)")
        return ImageCNN(cfg.image_shape, cfg.cnn_channels, cfg.hidden_sizes, cfg.dropout, cfg.n_outputs)
    raise TrainerError(f"unknown model kind {cfg.kind!r}")


def resolve_kind(requested: str, is_image: bool) -> str:
    """'auto' picks the CNN for images and the MLP otherwise; mismatches fail readably."""
    if requested == "auto":
        return "cnn" if is_image else "mlp"
    if requested == "cnn" and not is_image:
        raise TrainerError("model 'cnn' needs an image dataset; this one is tabular")
    if requested == "mlp" and is_image:
        raise TrainerError("model 'mlp' takes tabular features; use 'cnn' or 'auto' for image arrays")
    return requested


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class SeedEnsemble(nn.Module):
    """Tabular networks of one architecture trained from different seeds, answering as one model.

    Why: on a few hundred rows the seed alone moves a network's test metric by
    several points (penguins_sex ROC AUC 0.935-0.960 over five seeds), so a
    single network makes the deployed model's quality a draw. Averaging the
    members (a deep ensemble, Lakshminarayanan et al. 2017) removes most of that
    variance. Classification averages *probabilities* and returns their log, so
    the export's softmax gives the mean probability back; regression averages
    the (standardised) predictions.
    """

    def __init__(self, members: Sequence[nn.Module], classify: bool):
        super().__init__()
        if not members:
            raise TrainerError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.classify = classify

    def forward(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        outs: list[Tensor] = []
        for m in self.members:
            out = m(x_num, x_cat).to(torch.float32)
            outs.append(torch.softmax(out, dim=1) if self.classify else out)
        mean = torch.stack(outs, dim=0).mean(dim=0)
        return torch.log(mean.clamp_min(1e-12)) if self.classify else mean
