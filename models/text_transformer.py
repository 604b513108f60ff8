"""A small transformer-encoder text classifier: embeddings + positions → pre-norm encoder → mean pool → head."""

from onnxkit import nn
from onnxkit.zoo import Recipe


class TextTransformer(nn.Module):
    def __init__(self, vocab_size, max_len, dim, heads, ff_dim, num_layers, num_classes, dropout):
        self.max_len = max_len
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, ff_dim, dropout, "gelu", batch_first=True, norm_first=True)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.MeanPool()
        self.head = nn.Linear(dim, num_classes, init_fn="kaiming_uniform")  # its init before PyTorch's default

    def forward(self, input_ids, attention_mask):
        seq = nn.ops.shape_of(input_ids, 1, 2)
        pos = nn.ops.slice(self.positions.weight, [0], seq, [0], out_shape=[input_ids.shape[1], None])
        x = self.dropout(self.tokens(input_ids) + pos)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return self.head(self.pool(self.norm(x), attention_mask))


def recipe(vocab_size: int = 30522, max_len: int = 256, dim: int = 128, heads: int = 4,
           ff_dim: int = 256, num_layers: int = 2, num_classes: int = 2, dropout: float = 0.1,
           seed: int = 0) -> Recipe:
    nn.manual_seed(seed)
    model = TextTransformer(vocab_size, max_len, dim, heads, ff_dim, num_layers, num_classes, dropout)
    ids = nn.Input(["batch", "seq"], "int64")
    return Recipe(model, {"input_ids": ids, "attention_mask": ids},
                  task="classification", labels=[str(i) for i in range(num_classes)])
